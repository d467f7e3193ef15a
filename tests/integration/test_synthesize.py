"""``factory synthesize`` and ``factory analyze`` on a tiny face world with an untrained
generator: the shard contract, resume, determinism, the actor pool on 2 CPUs, the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from factory.config import load_config
from factory.errors import UserError
from factory.formats.dataset import open_dataset
from factory.provenance import platform_record
from factory.formats.shards import ShardDataset, iter_shard
from factory.synth.analyze import analyze
from factory.synth import synthesize as synthesize_module
from factory.synth.plan import identities_from_bytes, planned_keys
from factory.synth.synthesize import make_plan, synthesize
from factory.checkpoints.generator import load_generator, objective_record
from factory.config import GeneratorConfig
from helpers import synthesis_config

CONTRACT = {"label", "inquiry", "m", "similarity_inquiry", "similarity_center", "seed", "mixup",
            "generator", "sampler", "steps"}


@pytest.fixture(scope="module")
def synthesized(ray_two_cpus, world, tiny_generator, tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    config = synthesis_config(world, tiny_generator, out)
    return config, synthesize(config)


def test_shards_hold_the_planned_samples_with_the_contract(synthesized):
    config, run = synthesized
    identities, _ = make_plan(config, load_generator(str(config.synthesis.checkpoint)))
    expected = planned_keys(config.synthesis, identities)
    samples = [s for shard in sorted(os.listdir(os.path.join(run.out, "shards")))
               if shard.endswith(".tar")  # beside each, its Parquet metadata
               for s in iter_shard(os.path.join(run.out, "shards", shard))]
    assert [s["__key__"] for s in samples] == expected
    assert run.manifest["counts"] == {"identities": 6, "mixup_identities": 2, "samples": 18,
                                      "synthetic_images": 18, "real_images": 0, "shards": 3,
                                      "mixup_labels": "soft"}
    assert run.manifest["contains_real_images"] is False
    assert run.manifest["platform"] == platform_record()  # the CPU (and GPUs) that made it
    assert sum(run.manifest["histograms"]["similarity_center"]) == 18
    for sample in samples:
        meta = sample["json"]
        assert CONTRACT <= set(meta) and meta["label"] == sample["cls"]
        assert meta["m"] in (1.0, 0.0, -0.5) and meta["sampler"] == "ddim"
        assert meta["inference"] == {"device": "cpu", "precision": "fp32", "batch_size": 4,
                                     "channels_last": False, "compile": False}
        assert -1.0 <= meta["similarity_center"] <= 1.0
    mixed = [s["json"] for s in samples if s["json"]["label"] >= 4]
    assert all(m["mixup"]["partner"] and m["mixup"]["phi"] in
               [round(0.05 * i, 2) for i in range(21)] for m in mixed)
    assert all(m["mixup"]["labels"] == "soft" and len(m["mixup"]["parents"]) == 2
               and all(0 <= p < 4 for p in m["mixup"]["parents"]) for m in mixed)
    # the manifest's checksums are the files' checksums
    import hashlib

    for shard in run.manifest["shards"]:
        data = open(os.path.join(run.out, "shards", shard["shard"]), "rb").read()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
    # and the training interface reads them, selecting by metadata
    everything = open_dataset(run.out)
    # the 2 mixed identities train with SynFace's soft labels over their parents' classes
    assert len(everything) == 18 and everything.num_classes == 4
    assert everything.image(0).shape == (32, 32, 3)
    only_m1 = open_dataset(run.out, m_range=(0.5, 1.0))
    assert len(only_m1) == 6 and all(meta["m"] == 1.0 for meta in only_m1.metadata)


def test_the_run_says_where_its_time_went(synthesized):
    """The pool's start-up is read from the shards' own start times: it lies inside the pool's
    time, and with the actors' time in shards it cannot exceed what the actors had."""
    _, run = synthesized
    pool = run.pool
    assert run.plan_seconds > 0 and run.finish_seconds > 0
    assert 0 < pool.startup_seconds < pool.seconds
    assert pool.shard_seconds <= 2 * (pool.seconds - pool.startup_seconds) + 1e-6  # 2 actors


def test_manifest_and_card_record_the_generator_and_the_requested_m(synthesized, world):
    config, run = synthesized
    m_bins = run.manifest["histograms"]["m"]  # m 1.0, 0.0, -0.5 for each of 6 identities
    assert {index: count for index, count in enumerate(m_bins) if count} == {5: 6, 10: 6, 19: 6}
    assert run.manifest["generator_checkpoint"] == {
        "step": 0, "image_size": 32, "identity_encoder": None,
        "data": str(world / "faceworld" / "train"), "code_version": "test",
        "objective": objective_record(GeneratorConfig(image_size=32))}  # the fixture's defaults
    card = open(os.path.join(run.out, "README.md")).read()
    assert ("**generator objective**: L_MSE + 0.05 L_SimMat, linear target, m in [-1, 1], "
            "no Min-SNR weighting, condition dropout 0, EMA 0.999") in card
    assert "6 identities, 18 images in 3 WebDataset shards" in card
    assert "| [+0.9, +1.0] | 6 |" in card and "](similarity_histogram.png)" in card


def test_one_actor_with_a_separate_encoding_stage_writes_the_same_shards(
        synthesized, world, tiny_generator, tmp_path):
    """Neither the actor count nor where images are encoded changes a byte: the pool's two
    actors encoding in a thread and one actor with the encoding as its own stage write the same
    shards (one run checks both, a synthesis run being the expensive part)."""
    config, run = synthesized
    assert config.synthesis.actors.num_actors == 2 and config.synthesis.actors.encode == "thread"
    staged = synthesize(synthesis_config(world, tiny_generator, tmp_path / "staged",
                                         "synthesis.actors.num_actors=1",
                                         "synthesis.actors.encode=stage"))
    assert staged.manifest["shards"] == run.manifest["shards"]
    assert staged.manifest["counts"] == run.manifest["counts"]


def test_a_rerun_writes_only_unfinished_shards(synthesized, world, tiny_generator):
    config, run = synthesized
    stats = os.path.join(run.out, "stats", "shard-000001.json")
    tar = os.path.join(run.out, "shards", "shard-000001.tar")
    before = open(tar, "rb").read()
    os.remove(stats)  # as if the run died after the tar but before its stats file
    stale = os.path.join(run.out, "shards", ".tmp-deadbeef-shard-000002.tar")
    open(stale, "wb").write(b"half a shard")
    rerun = synthesize(config)
    assert rerun.images_written == 6
    assert open(tar, "rb").read() == before and not os.path.exists(stale)
    assert rerun.manifest["shards"] == run.manifest["shards"]
    with pytest.raises(UserError, match="another plan"):
        synthesize(synthesis_config(world, tiny_generator, run.out,
                                    "synthesis.images_per_identity=4"))


def test_a_rerun_resumes_the_saved_plan_without_embedding_the_inquiries(
        synthesized, monkeypatch):
    config, run = synthesized
    saved = os.path.join(run.out, "plan_identities.npz")
    identities, inquiry_filter = identities_from_bytes(open(saved, "rb").read())
    assert len(identities) == 6 and inquiry_filter == run.manifest["inquiry_filter"]

    def no_planning(*args, **kwargs):
        raise AssertionError("the plan was made again")

    monkeypatch.setattr(synthesize_module, "make_plan", no_planning)
    assert synthesize(config).manifest["shards"] == run.manifest["shards"]
    monkeypatch.undo()
    open(saved, "wb").write(b"not an npz")  # damaged: planned again, and saved again
    assert synthesize(config).manifest["shards"] == run.manifest["shards"]
    assert identities_from_bytes(open(saved, "rb").read())[0] == identities


def test_analyze_reports_statistics_m_curve_and_privacy(synthesized):
    config, run = synthesized
    report, text = analyze(config, run.out)
    assert report["counts"] == {"samples": 18, "synthetic": 18, "real_copies": 0,
                                "identities": 6, "shards": 3}
    assert sum(row["count"] for row in report["statistics"]) == 18
    privacy = report["privacy"]
    assert privacy["real_data"].endswith("train") and -1 <= privacy["max_similarity"] <= 1
    assert privacy["flagged"] == sum(1 for _ in privacy["flagged_identities"])
    reference = privacy["held_out_reference"]  # the 4 held-out inquiry identities
    assert reference["identities"] == 4 and reference["data"].endswith("inquiry")
    assert -1 <= reference["mean_max_similarity"] <= reference["max_similarity"] <= 1
    for name in ("analysis.json", "statistics.txt", "m_vs_similarity.png", "privacy.png",
                 "samples.png"):
        assert os.path.getsize(os.path.join(run.out, "report", name)) > 0
    assert "similarity to center" in text
    card = open(os.path.join(run.out, "README.md")).read()
    assert f"at most {privacy['max_similarity']:.3f}" in card and "Not checked yet" not in card
    assert "](report/privacy.png)" in card and card.count("## Privacy") == 1
    # every sample against every real center, false matches at E_id's FPR-1e-3 threshold
    per_sample = privacy["per_sample"]
    matched = per_sample["false_match"]
    assert per_sample["samples"] == 18 and matched["fpr"] == 1e-3
    assert matched["benchmarks"][0].endswith("validation/val_tiny.bin")
    assert 0 <= matched["rate"] <= 1 and matched["samples"] == round(18 * matched["rate"])
    assert matched["held_out_images"] == 4 and 0 <= matched["held_out_rate"] <= 1
    assert "false-match rate at FPR 0.001" in text and "Per sample" in card
    manifest = json.loads(open(os.path.join(run.out, "manifest.json")).read())
    assert manifest["privacy"]["e_id"]["per_sample"] == per_sample
    assert manifest["privacy"]["e_id"]["center_to_center"]["max_similarity"] == \
        privacy["max_similarity"]
    assert manifest["inquiry_filter"]["threshold"] == 1.0  # a fixed number in this config


def test_the_inquiry_filter_threshold_can_come_from_e_ids_impostor_statistics(
        synthesized, capsys):
    config = synthesized[0].model_copy(deep=True)
    config.synthesis.inquiry.max_similarity = "fpr:1e-3"
    identities, record = make_plan(config, load_generator(str(config.synthesis.checkpoint)))
    assert record["max_similarity"] == "fpr:1e-3" and -1 <= record["threshold"] <= 1
    assert record["impostor_pairs"] > 3000 and record["candidates"] == 4
    kept = [i for i in identities if i.partner is None]
    assert record["passed"] == len(kept)
    embeddings = np.array([i.embedding for i in kept])
    similarity = embeddings @ embeddings.T
    assert (similarity[~np.eye(len(kept), dtype=bool)] < record["threshold"]).all()
    printed = capsys.readouterr().out
    assert f"pairwise E_id cosine < {record['threshold']:.4f} = E_id's fpr:1e-3 threshold" \
        in printed and f"{len(kept)} of 4 inquiry identities pass" in printed


def test_inquiry_copies_are_off_by_default_and_recorded_when_on(ray_two_cpus, world,
                                                               tiny_generator, tmp_path):
    config = synthesis_config(world, tiny_generator, tmp_path / "copies",
                              "synthesis.include_inquiry_images=true",
                              "synthesis.inquiry.mixup_identities=0")
    run = synthesize(config)
    assert run.manifest["contains_real_images"] is True
    assert run.manifest["counts"]["real_images"] == 4
    metas = [m for m in ShardDataset(run.out).metadata if m["real"]]
    assert len(metas) == 4 and all(m["seed"] is None for m in metas)


def test_killing_the_driver_and_rerunning_gives_exactly_the_planned_keys(world, tiny_generator,
                                                                         tmp_path):
    out = tmp_path / "killed"
    config = synthesis_config(world, tiny_generator, out, "synthesis.identities_per_shard=1",
                              "synthesis.inquiry.mixup_identities=12",
                              "synthesis.sampling.steps=10", "synthesis.actors.num_actors=1",
                              "runtime.num_cpus=2")
    config_file = tmp_path / "synthesis.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    command = [sys.executable, "-m", "factory.cli", "synthesize", "--config", str(config_file)]
    driver = subprocess.Popen(command, cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stats = out / "stats"
    deadline = time.time() + 240
    while not (stats.exists() and any(p.suffix == ".json" for p in stats.iterdir())):
        assert driver.poll() is None and time.time() < deadline, "no shard finished"
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    finished_before = sum(1 for p in stats.iterdir() if p.name.endswith(".json"))
    assert 0 < finished_before < 16, "the kill must land mid-run"

    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    # at least what was finished at the kill is skipped (an orphaned actor may finish one more)
    skipped = int(rerun.stdout.split(" already complete")[0].rsplit(" ", 1)[-1])
    assert skipped >= finished_before
    identities, _ = make_plan(config, load_generator(str(tiny_generator)))
    keys = [s["__key__"] for shard in sorted((out / "shards").glob("*.tar"))
            for s in iter_shard(str(shard))]
    assert sorted(keys) == sorted(planned_keys(config.synthesis, identities))
    assert len(keys) == len(set(keys)) == 16 * 3
    assert not [n for n in os.listdir(out / "shards") if not n.startswith("shard-")]


def test_the_recognizer_trains_on_a_metadata_selection_of_the_shards(synthesized, world,
                                                                     tmp_path):
    from factory.train.recognizer import train_recognizer

    config, run = synthesized
    trainer_config = load_config(None, [
        f"workdir={world}", f"recognizer.data={run.out}", "recognizer.select.m=[0.5,1.0]",
        f"evaluate.benchmarks=[{world / 'faceworld' / 'benchmarks' / 'tiny.bin'}]",
        f"recognizer.storage={tmp_path / 'runs'}",
        f"runtime.mlflow_tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "recognizer.backbone.name=ir-tiny", "recognizer.backbone.input_size=32",
        "recognizer.backbone.embedding_size=16", "recognizer.optimizer.batch_size=4",
        "recognizer.optimizer.epochs=1", "recognizer.workers.cpus_per_worker=0.5",
        "recognizer.max_failures=0"])
    trained = train_recognizer(trainer_config)
    # 6 identities x the one image each at m = 1.0 -> 6 images, one batch-4 step per epoch
    assert trained.metrics["global_step"] == 1
    assert 0.0 <= trained.metrics["tiny/acc"] <= 100.0
