"""The dataset card (README.md): built from a tiny manifest and analysis, every section present,
its numbers those of the files, regenerated rather than appended, and its webdataset snippet
runs as printed."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from factory.checkpoints.generator import objective_record
from factory.config import load_config
from factory.formats.images import encode_jpeg
from factory.formats.shards import ShardSample, shard_name, write_shard
from factory.synth.card import write_card

EDGES = np.round(np.linspace(-1.0, 1.0, 21), 2).tolist()
SECTIONS = ["## Contents", "## Real images", "## Provenance", "## Requested similarity m",
            "## Measured similarity", "## Privacy", "## Config", "## How to load it"]


def _histogram(counts: dict[int, int]) -> list[int]:
    """20 bins over [-1, 1]; ``counts`` maps a bin index to its count."""
    return [counts.get(index, 0) for index in range(20)]


def _manifest(dataset, real_images=0) -> dict:
    config = load_config(None, ["name=tiny", f"workdir={dataset.parent}",
                                "synthesis.m.values=[1.0, 0.0, -0.5]",
                                "synthesis.images_per_identity=3",
                                f"synthesis.include_inquiry_images={bool(real_images)}"])
    return {
        "format": "facefactory-webdataset/1",
        "shard_pattern": "shards/shard-{000000..000001}.tar",
        "code_version": "facefactory 0.1.0 git abc123",
        "generator": "/ckpt/final@step900", "generator_uri": "/ckpt/final",
        "generator_checkpoint": {"step": 900, "image_size": 8, "identity_encoder": "/rec/final",
                                 "data": "/world/train", "code_version": "facefactory 0.1.0"},
        "counts": {"identities": 3, "mixup_identities": 1, "mixup_labels": "soft",
                   "samples": 9 + real_images,
                   "synthetic_images": 9, "real_images": real_images, "shards": 2},
        "contains_real_images": real_images > 0,
        "shards": [],
        "histograms": {"edges": EDGES, "similarity_inquiry": _histogram({12: 4, 15: 5}),
                       "similarity_center": _histogram({16: 2, 17: 7}),
                       "m": _histogram({19: 3, 10: 3, 5: 3})},
        "config": config.model_dump(mode="json"),
    }


def _analysis(dataset) -> dict:
    return {
        "dataset": str(dataset),
        "similarity_to_center": {"mean": 0.7123, "std": 0.0456},
        "m_spearman": 0.8766, "between_identity_centers": 0.1234,
        "privacy": {"real_data": "/world/train", "threshold": 0.6, "max_similarity": 0.5432,
                    "mean_max_similarity": 0.3210, "flagged": 2, "flagged_identities": [],
                    "held_out_reference": {"data": "/world/inquiry", "identities": 4,
                                           "max_similarity": 0.4567,
                                           "mean_max_similarity": 0.2345,
                                           "at_or_above_threshold": 1}},
    }


@pytest.fixture
def dataset(tmp_path):
    """A dataset directory with its manifest and the synthesis histogram figure."""
    root = tmp_path / "synthetic"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps(_manifest(root)))
    (root / "similarity_histogram.png").write_bytes(b"png")
    return root


def _with_analysis(root) -> None:
    (root / "report").mkdir()
    (root / "report" / "analysis.json").write_text(json.dumps(_analysis(root)))
    for name in ("m_vs_similarity.png", "privacy.png", "samples.png"):
        (root / "report" / name).write_bytes(b"png")


def test_every_section_with_the_manifests_numbers(dataset):
    card = open(write_card(str(dataset))).read()
    assert card == (dataset / "README.md").read_text()
    assert [line for line in card.splitlines() if line.startswith("## ")] == SECTIONS
    assert card.startswith("# Synthetic face dataset `tiny`\n\n3 identities, 9 images in 2 "
                           "WebDataset shards, made by facefactory 0.1.0 git abc123.")
    for fact in ("**identities**: 3 (1 made by identity mixup of two inquiry identities; "
                 "`mixup_labels: soft`, each trained with SynFace's two-hot label",
                 "**images**: 9 (9 synthetic, 0 real), 3 synthetic per identity",
                 "**shards**: 2, `shards/shard-{000000..000001}.tar`", "8 x 8 px",
                 "`/ckpt/final@step900` (checkpoint `/ckpt/final`)",
                 "**generator trained on**: `/world/train`", "**E_id**: `/rec/final`",
                 f"**inquiry identities**: 2 from `{dataset.parent}/faceworld/inquiry`",
                 "the values 1.0, 0.0, -0.5, cycled",
                 "**None.** Every image was sampled by the generator "
                 "(`synthesis.include_inquiry_images: false`)",
                 "Not checked yet"):
        assert fact in card, fact
    # m: three bins of 3; similarity: to inquiry in bins 12 and 15, to center in 16 and 17
    assert "| [-0.5, -0.4) | 3 |\n| [+0.0, +0.1) | 3 |\n| [+0.9, +1.0] | 3 |" in card
    assert ("| [+0.2, +0.3) | 4 | 0 |\n| [+0.5, +0.6) | 5 | 0 |\n| [+0.6, +0.7) | 0 | 2 |\n"
            "| [+0.7, +0.8) | 0 | 7 |") in card
    assert "](similarity_histogram.png)" in card and "](report/" not in card


def test_the_config_section_is_the_manifests_synthesis_config(dataset):
    card = open(write_card(str(dataset))).read()
    block = re.search(r"```yaml\n(.*?)```", card, re.S).group(1)
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert yaml.safe_load(block) == {"synthesis": manifest["config"]["synthesis"]}


def test_analysis_adds_statistics_privacy_and_the_figures(dataset):
    _with_analysis(dataset)
    card = open(write_card(str(dataset))).read()
    for fact in ("similarity to the identity center 0.712 +- 0.046",
                 "Spearman(requested m, similarity to inquiry) = 0.877",
                 "between identity centers 0.123",
                 "against every real identity center of `/world/train`",
                 "at most 0.543, mean of the maxima 0.321",
                 "**2 identities at or above the threshold 0.6**",
                 "4 held-out real identities (`/world/inquiry`) reach 0.457 at most",
                 "1 of them at or above the threshold",
                 "](report/m_vs_similarity.png)", "](report/samples.png)",
                 "](report/privacy.png)"):
        assert fact in card, fact
    assert "Not checked yet" not in card and "independent judge" not in card


def test_the_independent_judges_figures_are_shown(dataset):
    _with_analysis(dataset)
    analysis = json.loads((dataset / "report" / "analysis.json").read_text())
    analysis["judge"] = {
        "checkpoint": "/judge/final", "m_spearman": 0.4321,
        "similarity_to_inquiry_per_m": {"-0.50": 0.1111, "+1.00": 0.7777},
        "similarity_to_center": {"mean": 0.6543, "std": 0.0321},
        "privacy": {"threshold": 0.6, "max_similarity": 0.5111, "mean_max_similarity": 0.2999,
                    "flagged": 0, "held_out_reference": {"identities": 4, "max_similarity": 0.4,
                                                         "mean_max_similarity": 0.2555}}}
    (dataset / "report" / "analysis.json").write_text(json.dumps(analysis))
    card = open(write_card(str(dataset))).read()
    for fact in ("**The independent judge** (`/judge/final`",
                 "Spearman(requested m, similarity to inquiry) = 0.432 over plain identities",
                 "mean similarity to inquiry m -0.50: 0.111, m +1.00: 0.778",
                 "similarity to its own identity centers 0.654 +- 0.032",
                 "The independent judge: at most 0.511, mean of the maxima 0.300, 0 identities "
                 "at or above 0.6; held-out real identities: mean of maxima 0.256."):
        assert fact in card, fact


def test_a_rerun_regenerates_the_card(dataset):
    first = open(write_card(str(dataset))).read()
    assert open(write_card(str(dataset))).read() == first
    _with_analysis(dataset)
    updated = open(write_card(str(dataset))).read()
    assert updated != first
    assert all(updated.count(section + "\n") == 1 for section in SECTIONS)
    assert sorted(path.name for path in dataset.iterdir()) == [
        "README.md", "manifest.json", "report", "similarity_histogram.png"]


def test_real_images_are_stated(tmp_path):
    root = tmp_path / "copies"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps(_manifest(root, real_images=3)))
    card = open(write_card(str(root))).read()
    assert "**3 real images are included**" in card
    assert "(`synthesis.include_inquiry_images: true`)" in card
    assert "**images**: 12 (9 synthetic, 3 real)" in card


def test_a_manifest_from_before_the_card_still_gets_one(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    del manifest["generator_checkpoint"], manifest["histograms"]["m"]
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    card = open(write_card(str(dataset))).read()
    assert "**E_id**: not recorded" in card and "not in this manifest" in card


def _write_shards(dataset, labels_per_shard: list[list[int]], m: float) -> None:
    """Real shards of 8 px noise images under ``dataset/shards``, one per label list."""
    rng = np.random.default_rng(0)
    for shard, labels in enumerate(labels_per_shard):
        write_shard(str(dataset / "shards" / shard_name(shard)), [
            ShardSample(f"{shard}{index:05d}",
                        encode_jpeg(rng.integers(0, 256, (8, 8, 3), np.uint8)), label,
                        {"label": label, "m": m})
            for index, label in enumerate(labels)])


def test_the_webdataset_snippet_runs_as_printed(dataset):
    """The card's first Python block, run against real shards, yields every sample."""
    _write_shards(dataset, [[0, 0, 0, 1, 1, 1], [2, 2, 2]], m=1.0)
    card = open(write_card(str(dataset))).read()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    seen: list = []
    exec(snippet.replace("    ...", "    seen.append((image.shape, image.dtype, label, meta))"),
         {"seen": seen})
    assert [label for _, _, label, _ in seen] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(shape == (8, 8, 3) and dtype == np.uint8 and meta["m"] == 1.0
               for shape, dtype, _, meta in seen)
    for command in ("read_webdataset(", 'load_dataset("webdataset", data_files=',
                    f"factory export {dataset} --format rec --out OUT",
                    f"factory export {dataset} --format folder --out OUT"):
        assert command in card


def test_the_hugging_face_snippet_runs_as_printed(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # local files only, nothing fetched
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # its cache stays in the test's folder
    _write_shards(dataset, [[0, 0, 1], [2, 2]], m=0.5)
    card = open(write_card(str(dataset))).read()
    snippet = re.search(r"```python\n(from datasets.*?)```", card, re.S).group(1)
    scope: dict = {}
    exec(snippet, scope)
    rows = list(scope["dataset"])
    assert sorted(row["cls"] for row in rows) == [0, 0, 1, 2, 2]
    assert all(row["jpg"].size == (8, 8) and row["json"]["m"] == 0.5 for row in rows)


def test_per_sample_privacy_and_an_fpr_inquiry_filter_are_shown(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["config"]["synthesis"]["inquiry"]["max_similarity"] = "fpr:1e-4"
    manifest["inquiry_filter"] = {"max_similarity": "fpr:1e-4", "threshold": 0.4321,
                                  "impostor_pairs": 2876400, "candidates": 64, "passed": 37}
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    _with_analysis(dataset)
    analysis = json.loads((dataset / "report" / "analysis.json").read_text())
    analysis["privacy"]["per_sample"] = {
        "samples": 224, "max_similarity": 0.71, "mean_max_similarity": 0.33, "why_not": None,
        "false_match": {"fpr": 1e-4, "threshold": 0.4321, "impostor_pairs": 2876400,
                        "benchmarks": ["v.bin"], "samples": 9, "rate": 9 / 224,
                        "identities": 3, "of_identities": 14, "held_out_rate": 0.05,
                        "held_out_images": 64}}
    (dataset / "report" / "analysis.json").write_text(json.dumps(analysis))
    card = open(write_card(str(dataset))).read()
    for fact in ("every pair below cosine 0.4321, E_id's fpr:1e-4 threshold over 2,876,400 "
                 "impostor pairs; 37 of 64 candidates passed",
                 "Per sample (a leak hides in single samples): E_id: every synthetic sample "
                 "against every real identity center: max 0.710",
                 "false-match rate at FPR 0.0001 (threshold 0.432): 4.02% of samples (9, in 3 "
                 "of 14 identities); held-out real images: 5.00% of 64"):
        assert fact in card, fact


@pytest.mark.parametrize("reached, text", [
    (0.9970, "EMA 0.999 (warm-up: 0.9970 at the last update)"),
    (0.999, "EMA 0.999\n"),
    (None, "EMA 0.999\n"),
], ids=["ramped", "reached", "not-recorded"])
def test_the_objective_says_which_ema_decay_the_weights_reached(dataset, reached, text):
    manifest = json.loads((dataset / "manifest.json").read_text())
    config = load_config(None, ["generator.optimizer.ema_decay=0.999"])
    manifest["generator_checkpoint"]["objective"] = objective_record(config.generator, reached)
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    card = open(write_card(str(dataset))).read()
    assert text in card
