"""``factory experiments``: which cells the studies train, that every replicate has its own
synthetic data, that measured targets become m through the compliance curve, that choices read
validation only, that the page's verdicts follow the replicates' spread, and that a rerun trains
nothing twice."""

from __future__ import annotations

import json

import pytest

from factory.config import FactoryConfig, load_config
from factory.errors import UserError
from factory.eval.benchmarks import TEST_AVERAGE, VALIDATION_AVERAGE
from factory.experiments import run as run_module
from factory.experiments import targets as targets_module
from factory.experiments.cells import (
    LAMBDA0_ROLES,
    MeasuredSet,
    RealSet,
    SyntheticSet,
    gtr_study,
    lambda0_study,
    m_study,
    synface_study,
)
from factory.experiments.page import Summary, findings, gtr_lines, verdict, write_page
from factory.experiments.run import Results, best_m, cell_similarity, run_name, small_preset
from factory.experiments.targets import ResolvedTarget, resolve_targets

CONFIG = "configs/experiments/faceworld.yaml"
REACH = (-0.53, 0.92)
TARGETS = [ResolvedTarget("judge", "genuine:p25", 0.88, 0.96, REACH),
           ResolvedTarget("judge", "genuine:p50", 0.92, None, REACH),
           ResolvedTarget("judge", "0.5", 0.5, 0.46, REACH)]


def test_the_m_study_selects_equal_volumes_from_one_pool():
    exp = load_config(CONFIG).experiments
    cells = m_study(exp, TARGETS)
    singles = [c for c in cells if c.position is not None]
    # the reachable targets first, named by what they measure; the out-of-reach one has no cell
    assert [c.position for c in singles] == [0.96, 0.46, *exp.m_values]
    assert singles[0].name == "judge 0.88 (real genuine 25th percentile): m = +0.96"
    assert singles[0].tags == {"axis": "judge", "target": "0.88", "named_by": "target"}
    pool = singles[0].data
    assert all(c.data == pool for c in singles)  # one synthesis serves every single m
    values = sorted({0.96, 0.46, *exp.m_values}, reverse=True)
    assert pool.m_values == tuple(values) and pool.images == 16 * len(values)
    assert pool.identities == 200
    for cell in singles:  # each selection holds exactly one of the pool's values
        low, high = cell.m
        assert [m for m in values if low <= m <= high] == [cell.position]
    mixture = cells[-1]
    assert mixture.data.m_values == (0.0, 1.0) and mixture.data.images == 16


def test_every_replicate_synthesises_its_own_data_and_shares_the_real_data():
    exp = load_config(CONFIG).experiments
    cell = m_study(exp, [])[0]
    copies = [cell.data_for(seed) for seed in exp.seeds]
    assert [c.seed for c in copies] == exp.seeds
    assert len({c.folder for c in copies}) == len(exp.seeds)  # one folder per replicate
    assert len({c.key for c in copies}) == 1  # ... of the same cell, whose runs share a name
    real = RealSet(200, 16)
    measured = MeasuredSet(real)
    assert {real.replicate(s) for s in exp.seeds} == {real}
    assert {measured.replicate(s).folder for s in exp.seeds} == {"measured-judge-real-200x16"}


def test_cells_that_train_the_same_thing_share_data_and_runs():
    exp = load_config(CONFIG).experiments
    matched = lambda0_study(exp, TARGETS, 0.46)[0]
    plain = synface_study(exp, TARGETS, 0.46)[0]
    synthetic_200 = [c for c in gtr_study(exp, TARGETS, 0.46, 1.0, {})
                     if c.tags["side"] == "synthetic"][0]
    # the chosen m's reference in every later study is the m study's own cell: its runs again
    m_cell = next(c for c in m_study(exp, TARGETS) if c.position == 0.46)
    assert matched.key == plain.key == synthetic_200.key == m_cell.key
    assert matched.data == m_cell.data and matched.m == m_cell.m
    lambda0 = lambda0_study(exp, TARGETS, 0.46)[1]
    assert lambda0.key != matched.key and lambda0.data.generator == exp.lambda0_checkpoint
    domain = synface_study(exp, TARGETS, 0.46)[3]
    assert domain.data == plain.data and domain.m == plain.m and domain.real == RealSet(20, 16)
    assert domain.key != plain.key


def test_an_m_the_pool_does_not_hold_gets_a_set_of_its_own():
    exp = load_config(CONFIG).experiments
    plain = synface_study(exp, [], 0.46)[0]  # without the targets the pool has no 0.46
    assert plain.data == SyntheticSet(200, 16, (0.46,)) and plain.m is None
    larger = [c for c in gtr_study(exp, TARGETS, 0.46, 1.0, {}) if c.tags["side"] != "real"]
    assert [c.data for c in larger[2:]] == [SyntheticSet(1000, 16, (0.46,)),
                                            SyntheticSet(1000, 16, (1.0,))]


def test_identity_mixup_adds_mixed_identities_of_the_same_base_identities():
    exp = load_config(CONFIG).experiments  # mixup_share 1.0: one mixed per base identity
    plain, added, equal, _ = synface_study(exp, [], 0.0)
    pool = plain.data  # the m study's pool, plain's images those at m = 0
    assert (pool.identities, pool.mixup, pool.images // len(pool.m_values)) == (200, 0, 16)
    assert (added.data.identities, added.data.mixup, added.data.images) == (200, 200, 16)
    assert (equal.data.identities, equal.data.mixup, equal.data.images) == (200, 200, 8)
    total = (equal.data.identities + equal.data.mixup) * equal.data.images
    assert total == 200 * 16  # equal images
    assert "(3200 images)" in equal.name


def test_the_lambda0_ablation_can_compare_generators_trained_alike(tmp_path):
    exp = load_config(CONFIG, ["experiments.lambda0_reference_checkpoint=runs/matched"]
                      ).experiments
    matched, lambda0, equal = lambda0_study(exp, [], 1.0)
    assert lambda0.data.key == "synthetic-200x16-mp1.00-lambda0"  # the data made before stays
    assert equal.data.generator == exp.lambda0_reference_checkpoint != lambda0.data.generator
    assert len({c.key for c in (matched, lambda0, equal)}) == 3
    assert [c.tags["generator"] for c in (matched, lambda0, equal)] == list(LAMBDA0_ROLES)
    without = load_config(CONFIG, ["experiments.lambda0_reference_checkpoint="]).experiments
    assert [c.tags["generator"] for c in lambda0_study(without, [], 1.0)] == list(LAMBDA0_ROLES[:2])

    config = FactoryConfig()
    config.workdir = str(tmp_path / "work")
    config.experiments.out = str(tmp_path)
    results = Results(config)
    for cell, test in zip((matched, lambda0, equal), (82.0, 75.0, 76.0)):
        results.record_cell(cell, {}, [0, 1, 2])
        for seed in (0, 1, 2):
            results.record_run(run_name(cell, seed), {VALIDATION_AVERAGE: test,
                                                      TEST_AVERAGE: test + 0.1 * seed,
                                                      "seconds": 1.0})
    lines = findings(results.document)
    alike = next(line for line in lines if "both generators trained alike" in line)
    assert "**reproduced**" in alike and "76.10 vs 75.10" in alike
    assert any("training may differ" in line and "82.10 vs 75.10" in line for line in lines)


def test_gtr_matches_the_real_side_to_the_identities_synthesis_gave():
    exp = load_config(CONFIG).experiments
    cells = gtr_study(exp, [], 0.0, 0.0, {1000: 612})
    real = {c.tags["volume"]: c.data for c in cells if c.tags["side"] == "real"}
    assert real == {"200x16": RealSet(200, 16), "612x16": RealSet(612, 16)}
    synthetic = [c.data for c in cells if c.tags["side"] == "synthetic"]
    assert synthetic[1] == SyntheticSet(1000, 16, (0.0,))
    assert not [c for c in cells if c.tags["side"] == "most similar"]


def test_gtr_adds_the_most_similar_cell_to_split_the_gap(tmp_path):
    exp = load_config(CONFIG).experiments
    cells = gtr_study(exp, [], 0.46, 1.0, {})
    similar = [c for c in cells if c.tags["side"] == "most similar"]
    assert similar[0].key == m_study(exp, [])[0].key  # m = +1 at 200 x 16: the m study's
    assert similar[1].data == SyntheticSet(1000, 16, (1.0,))
    config = FactoryConfig()
    config.workdir = str(tmp_path / "work")
    results = Results(config)
    for cell in cells[:3]:  # real 90, chosen 84, most similar 80 at 200x16
        results.record_cell(cell, {}, [0, 1])
        score = {"real": 90.0, "synthetic": 84.0, "most similar": 80.0}[cell.tags["side"]]
        for seed in (0, 1):
            results.record_run(run_name(cell, seed), {VALIDATION_AVERAGE: score,
                                                      TEST_AVERAGE: score + seed,
                                                      "seconds": 1.0})
    lines = gtr_lines(results.document)
    assert "**GtR 6.00 +- 0.71** points (s.e.); goal <= 5: not met" in lines[0]
    assert "trails real data by 10.00 +- 0.71" in lines[1]
    assert "gains +4.00 +- 0.71 over it" in lines[1]
    # in progress: the next volume's real cell is listed (and trained) before its synthetic one
    results.record_cell(cells[3], {}, [0])
    results.record_run(run_name(cells[3], 0), {VALIDATION_AVERAGE: 95.0, TEST_AVERAGE: 95.0,
                                               "seconds": 1.0})
    assert gtr_lines(results.document)[2:] == [f"- {cells[3].tags['volume']}: not measured yet."]


def test_measured_targets_become_m_through_the_shipped_compliance_curve(monkeypatch):
    """Percentiles of the real genuine scores and fixed similarities resolve through the
    shipped generator's judge curve, piecewise linearly, to m on the 0.01 grid; one above the
    curve's top is kept, out of reach, with no m."""
    config = load_config(CONFIG)
    curve = json.loads(open("assets/faceworld-generator/compliance_curve.json").read())
    judge = dict(zip(curve["curves"]["judge"]["m"], curve["curves"]["judge"]["mean"]))
    genuine = [0.85 + 0.001 * i for i in range(101)]  # percentile p is 0.85 + 0.001 p
    monkeypatch.setattr(targets_module, "load_encoders", lambda config, checkpoint: {})
    monkeypatch.setattr(targets_module, "real_scale", lambda config, encoders: {
        "judge": {"genuine": genuine, "impostor": [0.0], "thresholds": {}}})
    halfway = round((judge[0.7] + judge[0.8]) / 2, 4)
    targets = load_config(CONFIG, [
        "experiments.m_targets=[{at: 'genuine:p99'}, {at: 'genuine:p10'}, "
        f"{{at: {halfway}}}, {{at: {round(judge[0.0], 4)}}}]"]).experiments.m_targets
    resolved, scale = resolve_targets(config, targets, "assets/faceworld-generator")
    assert [t.similarity for t in resolved[:2]] == [0.949, 0.86]
    assert resolved[0].m is None and resolved[0].reachable[1] == pytest.approx(judge[1.0],
                                                                                abs=1e-4)
    assert resolved[2].m == pytest.approx(0.75, abs=0.006)  # halfway between two points
    assert resolved[3].m == 0.0  # on a point
    assert all(round(t.m * 100) == pytest.approx(t.m * 100) for t in resolved[1:])
    assert resolved[1].label == "judge 0.86 (real genuine 10th percentile)"
    assert scale["judge"]["genuine"] is genuine


def test_a_cell_is_placed_by_the_judge_over_its_replicates():
    exp = load_config(CONFIG).experiments
    single = m_study(exp, [])[0]  # m = +1.00 of the pool
    mixture = m_study(exp, [])[-1]
    per_seed = [{"+1.00": {"mean": 0.9, "std": 0.1, "n": 10},
                 "+0.00": {"mean": 0.1, "std": 0.2, "n": 30}},
                {"+1.00": {"mean": 0.8, "std": 0.1, "n": 10},
                 "+0.00": {"mean": 0.1, "std": 0.2, "n": 30}}]
    assert cell_similarity(single, per_seed) == {"mean": 0.85, "std": 0.1, "replicates": 2}
    assert cell_similarity(mixture, per_seed[:1]) == {"mean": 0.3, "std": 0.175,
                                                      "replicates": 1}


def test_the_small_preset_has_its_own_folders():
    config = load_config(CONFIG)
    small = small_preset(config)
    assert small.workdir != config.workdir and small.experiments.out.endswith("/small")
    assert small.experiments.seeds == [0, 1]
    assert small.experiments.m_targets == config.experiments.small.m_targets
    assert small.experiments.m_mixtures == [] != config.experiments.m_mixtures
    assert small.recognizer.optimizer.epochs == config.experiments.small.epochs
    assert [v.label() for v in small.experiments.volumes] == ["60x8"]


def fake_judge(config, uri):
    """The judge's per-m figures of a synthetic set, without a set."""
    return {f"{m:+.2f}": {"mean": m, "std": 0.1, "n": 4} for m in (1.0, 0.5, 0.0, -0.25)}


def _results(tmp_path, runs: dict[str, tuple[float, float]]) -> Results:
    config = FactoryConfig()
    config.workdir = str(tmp_path / "work")
    config.experiments.out = str(tmp_path)
    config.experiments.m_values = [1.0, 0.0]
    results = Results(config)
    for name, (validation, test) in runs.items():
        results.runs[name] = {VALIDATION_AVERAGE: validation, TEST_AVERAGE: test, "seconds": 1.0}
    return results


def test_the_best_m_is_chosen_on_validation_never_on_test(tmp_path):
    config = FactoryConfig()
    config.workdir = str(tmp_path / "work")
    config.experiments.out = str(tmp_path)
    config.experiments.m_values = [1.0, 0.0]
    one, zero = m_study(config.experiments, [])[:2]
    # validation prefers m = 1, test prefers m = 0: the choice must follow validation
    runs = {run_name(one, s): (80.0, 60.0) for s in config.experiments.seeds}
    runs |= {run_name(zero, s): (70.0, 90.0) for s in config.experiments.seeds}
    results = _results(tmp_path, runs)
    assert best_m(results, config) == 1.0
    assert results.document["chosen"]["best_m"] == {"m": 1.0, "validation_avg": 80.0}


def test_later_studies_need_the_m_study(tmp_path):
    config = FactoryConfig()
    config.workdir = str(tmp_path / "work")
    config.experiments.out = str(tmp_path)
    with pytest.raises(UserError, match="run the m study first"):
        best_m(_results(tmp_path, {}), config)


def test_verdicts_follow_the_seeds_spread():
    assert "**reproduced**" in verdict("x", Summary(90.0, 0.5, 3), Summary(85.0, 0.5, 3), "")
    assert "**not reproduced**" in verdict("x", Summary(85.0, 0.5, 3), Summary(90.0, 0.5, 3), "")
    noisy = verdict("x", Summary(90.0, 4.0, 3), Summary(89.0, 4.0, 3), "")
    assert "**not separable from noise**" in noisy
    assert "not measured yet" in verdict("x", Summary(0, 0, 0), Summary(85.0, 0.5, 3), "")
    # one replicate has no spread: no verdict, however large the difference
    assert "not judged yet" in verdict("x", Summary(95.0, 0.0, 1), Summary(85.0, 0.5, 3), "")


def test_the_page_states_each_finding_and_draws_each_study(tmp_path):
    config = FactoryConfig()
    config.workdir = str(tmp_path / "work")
    config.experiments.out = str(tmp_path)
    config.experiments.m_values = [1.0, 0.0]
    config.experiments.m_mixtures = []
    results = Results(config)
    for cell, (validation, test) in zip(m_study(config.experiments, []), [(70, 71), (80, 81)]):
        results.record_cell(cell, {}, config.experiments.seeds,
                            {"mean": cell.position * 0.9, "std": 0.1, "replicates": 3})
        for seed in config.experiments.seeds:
            results.record_run(run_name(cell, seed), {VALIDATION_AVERAGE: validation + seed,
                                                      TEST_AVERAGE: test + seed,
                                                      "seconds": 10.0})
    page = write_page(config, results.document)
    text = open(page).read()
    assert "semi-hard m = 0 trains a better recognizer than easy m = 1 (requested m): " \
           "**reproduced**" in text
    assert "a harder cell (m = +0.00, the best below the most similar on validation)" in text
    assert "| m = +0.00 | 0.00 +- 0.10 | 81.00 +- 1.00 (n=3) | 82.00 +- 1.00 (n=3) | 10 |" in text
    assert "standard deviation over its replicates" in text and "(s.e.)" in text
    assert (tmp_path / "m.png").stat().st_size > 1000
    assert (tmp_path / "measured.png").stat().st_size > 1000  # the measured axis, drawn
    document = json.loads((tmp_path / "work" / "results.json").read_text())
    assert document["runs"] and document["cells"][0]["judge_similarity"]["mean"] == 0.9
    assert len(findings(results.document)) == 2


def m_study_run(tmp_path, monkeypatch, seeds: str) -> tuple[FactoryConfig, list[str]]:
    """An m-study-only config over ``seeds`` whose data making is faked (the returned list
    gathers the folders made), as is the judge and the targets' real scale."""
    config = load_config(CONFIG, [f"experiments.out={tmp_path / 'page'}",
                                  f"workdir={tmp_path / 'work'}", "experiments.studies=[m]",
                                  f"experiments.seeds={seeds}", "experiments.m_mixtures=[]",
                                  "experiments.m_targets=[]"])
    made: list[str] = []
    monkeypatch.setattr(run_module, "build_faceworld", lambda config: None)
    monkeypatch.setattr(run_module, "make_dataset",
                        lambda config, data, address: made.append(data.folder) or "pool")
    monkeypatch.setattr(run_module, "judged_similarity", fake_judge)
    monkeypatch.setattr(run_module, "resolve_once", lambda config, results: None)
    return config, made


def test_a_rerun_trains_only_what_is_missing(tmp_path, monkeypatch):
    """Every finished run is in results.json; the next invocation trains none of them again."""
    config, made = m_study_run(tmp_path, monkeypatch, "[0, 1]")
    trained: list[str] = []
    interrupt = [True]

    def fake_train(config, cell, uri, seed, address):
        trained.append(run_name(cell, seed))
        if len(trained) == 3 and interrupt and interrupt.pop():
            raise KeyboardInterrupt  # stopped mid-study, once
        return {VALIDATION_AVERAGE: 50.0, TEST_AVERAGE: 50.0, "seconds": 1.0}

    monkeypatch.setattr(run_module, "train_cell", fake_train)
    with pytest.raises(KeyboardInterrupt):
        run_module.run_experiments(config)
    assert len(trained) == 3
    trained.clear()
    run_module.run_experiments(config)
    assert len(trained) == 2 * len(config.experiments.m_values) - 2  # the two recorded ones skipped
    assert len(set(trained)) == len(trained)
    made.clear()
    run_module.run_experiments(config)  # all recorded: no run trains and no data is made again
    assert len(trained) == 2 * len(config.experiments.m_values) - 2 and made == []


def test_a_missing_lambda0_generator_stops_only_the_lambda0_study(tmp_path, monkeypatch):
    config = load_config(CONFIG, [f"experiments.out={tmp_path / 'page'}",
                                  f"workdir={tmp_path / 'work'}", "experiments.seeds=[0]",
                                  "experiments.m_mixtures=[]", "experiments.m_targets=[]",
                                  f"experiments.lambda0_checkpoint={tmp_path / 'absent'}"])
    monkeypatch.setattr(run_module, "build_faceworld", lambda config: None)
    monkeypatch.setattr(run_module, "make_dataset", lambda config, data, address: "pool")
    monkeypatch.setattr(run_module, "judged_similarity", fake_judge)
    monkeypatch.setattr(run_module, "resolve_once", lambda config, results: None)
    monkeypatch.setattr(run_module, "train_cell", lambda *args: {
        VALIDATION_AVERAGE: 50.0, TEST_AVERAGE: 50.0, "seconds": 1.0})
    run_module.run_experiments(config, only=["m"])
    with pytest.raises(UserError, match="experiments.lambda0_checkpoint: .*absent"):
        run_module.run_experiments(config, only=["lambda0"])
    with pytest.raises(UserError, match="experiments.lambda0_checkpoint"):
        run_module.run_experiments(config)


def test_the_small_variant_leaves_out_a_missing_lambda0_study_and_says_so(tmp_path, monkeypatch,
                                                                          capsys):
    """A clean checkout has no lambda = 0 generator: ``--small`` runs the other studies and the
    page names the one it left out; asked for by name, the study still refuses."""
    config = load_config(CONFIG, [f"experiments.out={tmp_path / 'page'}",
                                  f"workdir={tmp_path / 'work'}", "experiments.m_mixtures=[]",
                                  "experiments.studies=[m, lambda0]",
                                  "experiments.small.m_targets=[]",
                                  f"experiments.lambda0_checkpoint={tmp_path / 'absent'}"])
    studies: list[str] = []
    monkeypatch.setattr(run_module, "build_faceworld", lambda config: None)
    monkeypatch.setattr(run_module, "make_dataset", lambda config, data, address: "pool")
    monkeypatch.setattr(run_module, "judged_similarity", fake_judge)
    monkeypatch.setattr(run_module, "resolve_once", lambda config, results: None)
    monkeypatch.setattr(run_module, "train_cell", lambda config, cell, *args: studies.append(
        cell.study) or {VALIDATION_AVERAGE: 50.0, TEST_AVERAGE: 50.0, "seconds": 1.0})
    page = run_module.run_experiments(config, small=True)
    assert set(studies) == {"m"}
    assert "leaving out the lambda = 0 study" in capsys.readouterr().out
    with open(page) as stream:
        assert "Left out: CemiFace's ablation" in stream.read()
    with pytest.raises(UserError, match="experiments.lambda0_checkpoint: .*absent"):
        run_module.run_experiments(config, small=True, only=["lambda0"])


def test_a_clean_checkout_reruns_instead_of_reading_the_published_results(tmp_path, monkeypatch):
    """The page's results.json is the published record, not the working state: with a fresh
    workdir every run trains again, and the page's copy is rewritten from the new runs."""
    config = load_config(CONFIG, [f"experiments.out={tmp_path / 'page'}",
                                  f"workdir={tmp_path / 'work'}", "experiments.studies=[m]",
                                  "experiments.seeds=[0]", "experiments.m_mixtures=[]",
                                  "experiments.m_targets=[]"])
    trained: list[str] = []
    monkeypatch.setattr(run_module, "build_faceworld", lambda config: None)
    monkeypatch.setattr(run_module, "make_dataset", lambda config, data, address: "pool")
    monkeypatch.setattr(run_module, "judged_similarity", fake_judge)
    monkeypatch.setattr(run_module, "resolve_once", lambda config, results: None)
    monkeypatch.setattr(run_module, "train_cell", lambda config, cell, uri, seed, address: (
        trained.append(run_name(cell, seed)) or {VALIDATION_AVERAGE: 50.0 + len(trained),
                                                 TEST_AVERAGE: 50.0, "seconds": 1.0}))
    run_module.run_experiments(config)
    published = json.loads((tmp_path / "page" / "results.json").read_text())
    assert set(published["runs"]) == set(trained) and trained

    first = list(trained)
    clean = config.model_copy(update={"workdir": str(tmp_path / "clean-checkout")})
    run_module.run_experiments(clean)
    assert trained == first + first  # every run again, none read from the page's copy
    republished = json.loads((tmp_path / "page" / "results.json").read_text())
    assert republished["runs"][first[0]][VALIDATION_AVERAGE] == 50.0 + len(first) + 1


def test_targets_are_resolved_once_per_generator_curve_and_target_list(tmp_path, monkeypatch):
    """The cells' m, hence their data and run names, stay fixed across reruns; a new curve
    beside the checkpoint (or other targets) resolves them again."""
    checkpoint = tmp_path / "generator"
    checkpoint.mkdir()
    (checkpoint / "compliance_curve.json").write_text(json.dumps({"curves": {"n": 1}}))
    config = load_config(CONFIG, [f"workdir={tmp_path / 'work'}",
                                  f"synthesis.checkpoint={checkpoint}"])
    calls: list[int] = []
    monkeypatch.setattr(run_module, "resolve_targets", lambda config, targets, uri: (
        calls.append(1) or ([ResolvedTarget("judge", "0.5", 0.5, 0.46, REACH)], {})))
    results = Results(config)
    run_module.resolve_once(config, results)
    run_module.resolve_once(config, Results(config))  # read back from results.json
    assert len(calls) == 1
    assert run_module.targets_of(results)[0].m == 0.46
    (checkpoint / "compliance_curve.json").write_text(json.dumps({"curves": {"n": 2}}))
    run_module.resolve_once(config, Results(config))
    assert len(calls) == 2


def test_the_page_can_be_written_from_a_run_in_progress(tmp_path, monkeypatch):
    """--page-only trains nothing and writes the page from the workdir's results.json."""
    config = load_config(CONFIG, [f"experiments.out={tmp_path / 'page'}",
                                  f"workdir={tmp_path / 'work'}", "experiments.studies=[m]",
                                  "experiments.seeds=[0]", "experiments.m_mixtures=[]",
                                  "experiments.m_targets=[]"])
    monkeypatch.setattr(run_module, "train_cell", lambda *args: pytest.fail("trained"))
    with pytest.raises(UserError, match="no finished runs"):
        run_module.run_experiments(config, page_only=True)
    results = Results(config)
    cell = m_study(config.experiments, [])[0]
    results.record_cell(cell, {}, [0])
    results.record_run(run_name(cell, 0), {VALIDATION_AVERAGE: 70.0, TEST_AVERAGE: 71.0,
                                           "seconds": 5.0, "code_version": "v1"})
    page = run_module.run_experiments(config, page_only=True)
    text = open(page).read()
    assert "| m = +1.00 | - | 70.00 (n=1) | 71.00 (n=1) | 5 |" in text
    assert "Runs by code version: v1 (1)." in text
    assert json.loads((tmp_path / "page" / "results.json").read_text())["runs"]


def test_a_study_runs_replicate_by_replicate(tmp_path, monkeypatch):
    """Every cell's first replicate before any second one: the m study's cells share one pool
    per replicate, so a study stopped part-way holds whole replicates."""
    config, made = m_study_run(tmp_path, monkeypatch, "[0, 1]")
    trained: list[int] = []
    monkeypatch.setattr(run_module, "train_cell", lambda config, cell, uri, seed, address: (
        trained.append(seed) or {VALIDATION_AVERAGE: 50.0, TEST_AVERAGE: 50.0, "seconds": 1.0}))
    run_module.run_experiments(config)
    cells = len(config.experiments.m_values)
    assert trained == [0] * cells + [1] * cells
    assert [folder[-5:] for folder in dict.fromkeys(made)] == ["seed0", "seed1"]  # two pools
