"""The experiments' results page: per-study tables (mean +- std over replicates), a verdict per
finding of the papers, and PNGs, written from ``results.json`` alone.

Every figure on the page is the test benchmarks' AVG at each run's final epoch unless it says
validation; choices (the best m, the middle similarity group) were made on validation. A cell's
+- is the standard deviation over its replicates; a difference's +- is its standard error. A
finding is *reproduced* when the difference has the papers' sign and is at least twice its
standard error, *not reproduced* when it has the other sign at that size, and *not separable
from noise* otherwise. The measured axis is the judge's: its cosine of each synthetic image to
its inquiry, of each real image to its identity center (the similarity groups), and of the real
genuine and impostor pairs drawn under the curves.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import textwrap
from dataclasses import dataclass
from typing import Any

from factory import storage
from factory.config import FactoryConfig
from factory.eval.benchmarks import TEST_AVERAGE, VALIDATION_AVERAGE
from factory.experiments.cells import LAMBDA0_ROLES

PAGE_FILE = "README.md"
STUDY_TITLES = {
    "m": "CemiFace's m study (cells named by measured similarity or requested m, equal volume)",
    "similarity_groups": "CemiFace's similarity-group study (the real face world split by the "
                         "judge's similarity to center, equal sizes)",
    "lambda0": "CemiFace's ablation: no similarity matching (lambda = 0)",
    "synface": "SynFace: identity mixup and domain mixup",
    "gtr": "Gap to real at equal volume",
}
MEASURED_PNG = "measured.png"
GTR_GOAL = 5.0
"""Points of AVG the synthetic-trained recognizer may trail the real-trained one by."""


@dataclass(frozen=True)
class Summary:
    """One cell's figure over its finished seeds."""

    mean: float
    std: float
    n: int

    def text(self) -> str:
        """Mean +- std over replicates; one replicate has no spread, so none is printed."""
        if not self.n:
            return "-"
        spread = f" +- {self.std:.2f}" if self.n > 1 else ""
        return f"{self.mean:.2f}{spread} (n={self.n})"


def summarise(values: list[float]) -> Summary:
    if not values:
        return Summary(math.nan, math.nan, 0)
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return Summary(mean, math.sqrt(var), len(values))


def cell_summary(document: dict[str, Any], cell: dict[str, Any], key: str) -> Summary:
    runs = [document["runs"][name] for name in cell["runs"] if name in document["runs"]]
    return summarise([run[key] for run in runs])


def difference(first: Summary, second: Summary) -> tuple[float, float]:
    """``first - second`` and its standard error."""
    return (first.mean - second.mean,
            math.sqrt(first.std ** 2 / first.n + second.std ** 2 / second.n))


def verdict(claim: str, better: Summary, worse: Summary, numbers: str) -> str:
    """One line: the claim that ``better`` beats ``worse``, and what the seeds say of it."""
    if not better.n or not worse.n:
        return f"- {claim}: not measured yet."
    if better.n < 2 or worse.n < 2:
        return (f"- {claim}: not judged yet ({better.mean:.2f} vs {worse.mean:.2f}, but a "
                "side has one replicate, so no spread)")
    diff, se = difference(better, worse)
    if abs(diff) < 2 * se or diff == 0:
        word = "not separable from noise"
    elif diff > 0:
        word = "reproduced"
    else:
        word = "not reproduced"
    return (f"- {claim}: **{word}** on the face world ({better.mean:.2f} vs {worse.mean:.2f}, "
            f"difference {diff:+.2f} +- {se:.2f} s.e.; {numbers})")


def cells_of(document: dict[str, Any], study: str) -> list[dict[str, Any]]:
    return [c for c in document["cells"] if c["study"] == study]


def by_position(cells: list[dict[str, Any]], position: float) -> dict[str, Any] | None:
    return next((c for c in cells if c["position"] is not None
                 and abs(c["position"] - position) < 1e-6), None)


def similarity_text(cell: dict[str, Any]) -> str:
    measured = cell.get("judge_similarity")
    return "-" if not measured else f"{measured['mean']:.2f} +- {measured['std']:.2f}"


def study_table(document: dict[str, Any], study: str) -> str:
    rows = ["| cell | judge similarity | validation AVG | test AVG | seconds per run |",
            "|---|---|---|---|---|"]
    for cell in cells_of(document, study):
        runs = [document["runs"][n] for n in cell["runs"] if n in document["runs"]]
        seconds = f"{sum(r['seconds'] for r in runs) / len(runs):.0f}" if runs else "-"
        rows.append(f"| {cell['name']} | {similarity_text(cell)} | "
                    f"{cell_summary(document, cell, VALIDATION_AVERAGE).text()}"
                    f" | {cell_summary(document, cell, TEST_AVERAGE).text()} | {seconds} |")
    return "\n".join(rows)


def best_on_validation(document: dict[str, Any], cells: list[dict[str, Any]]
                       ) -> dict[str, Any] | None:
    """The cell of ``cells`` with the best mean validation AVG over its finished replicates."""
    scored = [(cell_summary(document, c, VALIDATION_AVERAGE), c) for c in cells]
    scored = [(summary.mean, c) for summary, c in scored if summary.n]
    return max(scored, key=lambda pair: pair[0])[1] if scored else None


def findings(document: dict[str, Any]) -> list[str]:
    """A verdict per finding of the papers the studies can check."""
    lines: list[str] = []
    test = TEST_AVERAGE

    def s(cell: dict[str, Any] | None) -> Summary:
        return cell_summary(document, cell, test) if cell else Summary(math.nan, math.nan, 0)

    m_cells = cells_of(document, "m")
    singles = [c for c in m_cells if c["position"] is not None]
    if singles:
        top = max(c["position"] for c in singles)
        most_similar = [c for c in singles if c["position"] == top]
        harder = best_on_validation(document, [c for c in singles if c["position"] != top])
        if harder:
            lines.append(verdict(f"CemiFace: a harder cell ({harder['name']}, the best below the "
                                 "most similar on validation) trains a better recognizer than "
                                 f"the most similar cell ({most_similar[0]['name']})",
                                 s(harder), s(most_similar[0]),
                                 "CemiFace 10k x 10: m = 0 89.57 vs m = 1 84.13"))
    grid = [c for c in m_cells if c["tags"].get("named_by") == "m"]
    zero, one, negative = (by_position(grid, 0.0), by_position(grid, 1.0),
                           min((c for c in grid if c["position"] < 0),
                               key=lambda c: c["position"], default=None))
    if zero and one:
        lines.append(verdict("CemiFace: semi-hard m = 0 trains a better recognizer than easy "
                             "m = 1 (requested m)", s(zero), s(one),
                             "CemiFace 10k x 10: 89.57 vs 84.13"))
    if zero and negative:
        lines.append(verdict(f"CemiFace: m = 0 beats negative m ({negative['name']})", s(zero),
                             s(negative), "CemiFace: m = -0.1 87.71, m = -0.5 69.40"))
    for mixture in (c for c in m_cells if c["position"] is None):
        if zero:
            lines.append(verdict(f"CemiFace: adding easy samples hurts (m = 0 against "
                                 f"{mixture['name']})", s(zero), s(mixture),
                                 "CemiFace: 91.64 against 90.36 .. 89.57"))
    groups = cells_of(document, "similarity_groups")
    if len(groups) >= 3:
        ordered = sorted(groups, key=lambda c: c["position"])
        middle = max(ordered[1:-1], key=lambda c: cell_summary(document, c, VALIDATION_AVERAGE)
                     .mean if cell_summary(document, c, VALIDATION_AVERAGE).n else -math.inf)
        lines.append(verdict(f"CemiFace: a middle similarity group ({middle['name']}, the best "
                             "middle one on validation) beats the most similar group",
                             s(middle), s(ordered[-1]), "CemiFace: 0.76 -> 91.78 vs 0.85 -> 89.48"))
        lines.append(verdict("CemiFace: ... and beats the least similar group", s(middle),
                             s(ordered[0]), "CemiFace: 0.53 -> 82.36"))
    ablation = {c["tags"].get("generator"): c for c in cells_of(document, "lambda0")}
    experiments, lambda0, equal = LAMBDA0_ROLES
    if equal in ablation and lambda0 in ablation:
        lines.append(verdict("CemiFace: similarity matching (lambda > 0) makes better data than "
                             "lambda = 0, both generators trained alike", s(ablation[equal]),
                             s(ablation[lambda0]), "the paper's ablation"))
    if experiments in ablation and lambda0 in ablation:
        lines.append(verdict("CemiFace: the experiments' generator makes better data than the "
                             "lambda = 0 one (their training may differ beyond lambda)",
                             s(ablation[experiments]), s(ablation[lambda0]),
                             "the paper's ablation"))
    synface = {c["tags"].get("mixup", "plain"): c for c in cells_of(document, "synface")}
    if "plain" in synface:
        plain = s(synface["plain"])
        for tag, claim, paper in (
                ("added", "identity mixup (mixed identities of the same base identities added, "
                          "soft labels) helps", "SynFace: helps on the same base identities"),
                ("equal images", "identity mixup helps at equal images",
                 "SynFace: helps on the same base identities"),
                ("domain", "domain mixup with a small real share helps",
                 "SynFace: a little real data helps")):
            if tag in synface:
                lines.append(verdict(f"SynFace: {claim}", s(synface[tag]), plain, paper))
    return lines


def gtr_lines(document: dict[str, Any]) -> list[str]:
    """GtR per volume, with the goal beside it and, where the most similar cell was trained at
    that volume too, the gap split into fidelity-and-diversity and difficulty."""
    cells = cells_of(document, "gtr")
    lines: list[str] = []
    for volume in dict.fromkeys(c["tags"]["volume"] for c in cells):
        sides = {c["tags"]["side"]: cell_summary(document, c, TEST_AVERAGE)
                 for c in cells if c["tags"]["volume"] == volume}
        # a study in progress may list a volume's real cell before its synthetic one
        real, synthetic = sides.get("real"), sides.get("synthetic")
        if real is None or synthetic is None or not real.n or not synthetic.n:
            lines.append(f"- {volume}: not measured yet.")
            continue
        gtr, se = difference(real, synthetic)
        met = "met" if gtr <= GTR_GOAL else "not met"
        lines.append(f"- {volume} (identities x images on both sides): real {real.mean:.2f}, "
                     f"synthetic {synthetic.mean:.2f}, **GtR {gtr:.2f} +- {se:.2f}** points "
                     f"(s.e.); goal <= {GTR_GOAL:.0f}: {met}")
        similar = sides.get("most similar")
        if gtr > GTR_GOAL and similar is not None and similar.n:
            lost, lost_se = difference(real, similar)
            gained, gained_se = difference(synthetic, similar)
            lines.append(f"  - split: the most similar synthetic data trails real data by "
                         f"{lost:.2f} +- {lost_se:.2f} (the generator's fidelity and "
                         f"diversity); the chosen difficulty gains {gained:+.2f} +- "
                         f"{gained_se:.2f} over it")
    return lines


def plot_study(document: dict[str, Any], study: str, path: str) -> bool:
    """Test and validation AVG per cell, +- std over replicates (the m study: against requested
    m); False when nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in cells_of(document, study)
             if cell_summary(document, c, TEST_AVERAGE).n]
    if not cells:
        return False
    curve = study == "m"
    if curve:  # one point per distinct m (a target and a grid value may name the same cell)
        cells = sorted({c["key"]: c for c in cells if c["position"] is not None}.values(),
                       key=lambda c: c["position"])
        if not cells:
            return False
    # the m study is a curve over m; the other studies' cells are rows named in full
    fig, ax = plt.subplots(figsize=(7, 4) if curve else (7, 1.2 + 0.55 * len(cells)))
    accuracy = "10-fold accuracy (%), mean +- std over seeds"
    for offset, (key, label) in enumerate(((TEST_AVERAGE, "test AVG"),
                                           (VALIDATION_AVERAGE, "validation AVG"))):
        stats = [cell_summary(document, c, key) for c in cells]
        means, stds = [st.mean for st in stats], [st.std for st in stats]
        if curve:
            ax.errorbar([c["position"] for c in cells], means, yerr=stds, fmt="o-", capsize=4,
                        label=label)
        else:
            rows = [i + 0.15 * (offset - 0.5) for i in range(len(cells))]
            ax.errorbar(means, rows, xerr=stds, fmt="o", capsize=4, label=label)
    if curve:
        ax.set_xlabel("requested m (mixtures: in the table)")
        ax.set_ylabel(accuracy)
    else:
        ax.set_yticks(range(len(cells)))
        ax.set_yticklabels([textwrap.fill(c["name"], 34) for c in cells], fontsize=8)
        ax.invert_yaxis()  # the table's order, top to bottom
        ax.set_xlabel(accuracy)
    ax.set_title(textwrap.fill(STUDY_TITLES[study], 70), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_measured(document: dict[str, Any], path: str) -> bool:
    """The m study's synthetic cells and the similarity groups' real cells on one axis, the
    judge's similarity, with test AVG +- std over replicates; the real genuine and impostor
    distributions by the judge under them. False when nothing is measured yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    for study, label, marker in (("m", "synthetic: the m study (similarity to the inquiry)", "o"),
                                 ("similarity_groups", "real: the similarity groups "
                                  "(similarity to the identity center)", "s")):
        points = sorted((c["judge_similarity"]["mean"], cell_summary(document, c, TEST_AVERAGE))
                        for c in cells_of(document, study)
                        if c.get("judge_similarity") and c["position"] is not None
                        and cell_summary(document, c, TEST_AVERAGE).n)
        if points:
            series.append((label, marker, points))
    if not series:
        return False
    scale = document.get("scale", {}).get("judge")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    for label, marker, points in series:
        top.errorbar([p[0] for p in points], [p[1].mean for p in points],
                     yerr=[p[1].std for p in points], fmt=marker + "-", capsize=4, label=label)
    top.set_ylabel("test AVG (%), mean +- std over replicates")
    top.set_title("Accuracy against the similarity the judge measures", fontsize=9)
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    if scale:
        bins = [i / 50 - 1 for i in range(101)]
        bottom.hist(scale["genuine"], bins=bins, density=True, alpha=0.6,
                    label="real genuine (image vs its identity's reference)")
        bottom.hist(scale["impostor"], bins=bins, density=True, alpha=0.6,
                    label="real impostor (validation pairs)")
        bottom.legend(fontsize=7)
    bottom.set_xlabel("judge cosine similarity")
    bottom.set_ylabel("density")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def recipe(config: FactoryConfig) -> str:
    """The recognizer recipe every cell trains, in a few words."""
    r = config.recognizer
    margin = "" if r.head.margin_value is None else f" m {r.head.margin_value:g}"
    return (f"{r.backbone.name} at {r.backbone.input_size} px, {r.head.margin} s {r.head.scale:g}"
            f"{margin}, {r.optimizer.epochs} epochs, batch {r.optimizer.batch_size}, "
            f"{r.optimizer.schedule} schedule")


def generator_lines(document: dict[str, Any]) -> list[str]:
    """Each generator the studies synthesised with: its objective and sampler."""
    lines = []
    for role, g in document.get("generators", {}).items():
        o, sampling = g.get("objective") or {}, g["sampling"]
        guidance = (f"identity guidance w {sampling['guidance_scale']:g} at t/T in "
                    f"{sampling.get('guidance_interval') or [0, 1]}"
                    if sampling.get("guidance_scale", 1.0) != 1.0 else "no guidance")
        lines.append(
            f"- {role}: `{g['checkpoint']}` ({g.get('step')} steps, {g.get('code_version')}): "
            f"{o.get('loss', '?')} with lambda {o.get('lambda', '?')}, target schedule "
            f"{o.get('target_schedule', '?')}, condition dropout "
            f"{o.get('condition_dropout', 0)}, min-SNR {o.get('min_snr_gamma')}, EMA "
            f"{o.get('ema_decay')}; sampled with {sampling['solver'].upper()} "
            f"{sampling['steps']} steps, eta {sampling['eta']:g}, {guidance}")
    return lines


def target_lines(document: dict[str, Any]) -> list[str]:
    """The m study's measured targets: what each is on the real scale and the m it became."""
    resolved = document.get("targets", {}).get("resolved", [])
    if not resolved:
        return []
    rows = ["| target | similarity | requested m |", "|---|---|---|"]
    for t in resolved:
        m = (f"{t['m']:+.2f}" if t["m"] is not None else
             f"out of reach: the generator reaches {t['reachable'][0]:.2f} .. "
             f"{t['reachable'][1]:.2f} on this axis; not run")
        rows.append(f"| {t['axis']}: {t['spec']} | {t['similarity']:.3f} | {m} |")
    scale = document.get("scale", {})
    notes = [f"{name}: {len(figures['genuine'])} real genuine scores, median "
             f"{statistics.median(figures['genuine']):.3f}; {len(figures['impostor'])} impostor "
             f"pairs, median {statistics.median(figures['impostor']):.3f}"
             for name, figures in scale.items()]
    return rows + ["", "Real scale: " + "; ".join(notes) + "."] if notes else rows


def version_line(document: dict[str, Any]) -> str:
    """Which code versions made the runs on the page (results.json has each run's)."""
    counts: dict[str, int] = {}
    for run in document["runs"].values():
        version = run.get("code_version", "not recorded")
        counts[version] = counts.get(version, 0) + 1
    return "Runs by code version: " + "; ".join(f"{v} ({n})" for v, n in counts.items()) + "."


def write_page(config: FactoryConfig, document: dict[str, Any]) -> str:
    """Write ``<out>/README.md`` and one PNG per study; returns the page's URI."""
    out = config.experiments.out
    exp = config.experiments
    total = sum(run["seconds"] for run in document["runs"].values())
    chosen = document.get("chosen", {})
    parts = [
        "# Face-world experiments",
        "",
        f"Made by `factory experiments` ({document['code_version']}) from `results.json` beside "
        "this page. Every number is the test benchmarks' AVG (10-fold accuracy, %) of a "
        "recognizer at its final epoch unless marked validation. A cell's +- is the standard "
        "deviation over its replicates (n), each replicate synthesising its own data (the "
        "synthesis seed is the replicate's) and training with its own seed; a difference's +- "
        "is its standard error (s.e.). Every choice (the best m, the middle similarity group) "
        "was made on the validation benchmarks, which share no identity with training, "
        "inquiries or test. 'judge similarity' is the independent judge's cosine of the "
        "cell's images to their inquiry (synthetic) or identity center (real), mean +- std "
        "over the images.",
        "",
        f"Recipe: {recipe(config)}; replicates {exp.seeds}; volumes "
        f"{', '.join(v.label() for v in exp.volumes)} (identities x images). Training time of "
        f"the runs on this page: {total / 3600:.2f} h. {version_line(document)}",
        "",
    ]
    generators = generator_lines(document)
    if generators:
        parts += ["Generators:", "", *generators, ""]
    if "best_m" in chosen:
        parts += [f"Best m on validation: **{chosen['best_m']['m']:+.2f}** (validation AVG "
                  f"{chosen['best_m']['validation_avg']:.2f}); the SynFace and GtR studies "
                  "synthesise at it."]
        if "best_m_below_top" in chosen:
            parts += [f"Best m below the most similar one: "
                      f"**{chosen['best_m_below_top']['m']:+.2f}** (validation AVG "
                      f"{chosen['best_m_below_top']['validation_avg']:.2f}); the lambda = 0 "
                      "study synthesises at it."]
        parts += [""]
    for study, reason in document.get("left_out", {}).items():
        parts += [f"Left out: {STUDY_TITLES[study]} ({reason}).", ""]
    parts += ["## Findings", "", *findings(document), ""]
    if cells_of(document, "gtr"):
        parts += ["## GtR per volume", "", *gtr_lines(document), ""]
    with tempfile.TemporaryDirectory() as scratch:
        def figure(name: str, draw) -> bool:
            local = os.path.join(scratch, name)
            if not draw(local):
                return False
            with open(local, "rb") as stream:
                storage.write_bytes(storage.join(out, name), stream.read())
            return True

        if figure(MEASURED_PNG, lambda path: plot_measured(document, path)):
            parts += ["## The m study and the similarity groups on the judge's axis", "",
                      f"![accuracy against measured similarity]({MEASURED_PNG})", ""]
        targets = target_lines(document)
        if targets:
            parts += ["## The m study's measured targets", "", *targets, ""]
        for study, title in STUDY_TITLES.items():
            if not cells_of(document, study):
                continue
            parts += [f"## {title}", "", study_table(document, study), ""]
            png = f"{study}.png"
            if figure(png, lambda path, study=study: plot_study(document, study, path)):
                parts += [f"![{title}]({png})", ""]
    page = storage.join(out, PAGE_FILE)
    storage.write_text(page, "\n".join(parts))
    return page
