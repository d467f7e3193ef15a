"""``factory analyze DIR``: what a synthetic dataset holds, and whether it leaks real identities.

Reads the shards' metadata (never the model for the synthetic side: similarities and identity
centers were measured when the shards were written) and reports

* counts: samples, identities, shards, real images copied in;
* the CemiFace statistics table: per 0.1 bin of similarity to the identity center, the count,
  mean and std;
* requested m against measured similarity to the inquiry embedding (``m_vs_similarity.png``);
* a montage of the first identities' samples (``samples.png``, rows identities);
* the privacy check: each synthetic identity's maximum similarity to any real training identity
  center (E_id of the generator's own training data, or ``synthesis.privacy.real_data``), with
  identities at or above ``synthesis.privacy.threshold`` flagged (``privacy.png``); and every
  synthetic sample against every real center, with the false-match rate at E_id's threshold
  for FPR 1e-4 (:mod:`factory.synth.privacy`); both are recorded in the manifest too;
* with ``judge.checkpoint`` set, the same figures as the independent judge measures them
  (``factory.synth.judged``): those lead, since the shards' similarities are E_id's; and each
  synthetic sample's similarities by the judge in ``report/judge_similarity.parquet``, keyed by
  shard and key like the shards' own Parquet metadata (a sidecar: the shards' files stay as
  written, see :mod:`factory.synth.judged`);
* the real genuine scale (:mod:`factory.eval.real_reference`): real photos of held-out
  identities against their own reference image, by E_id and the judge, per nuisance kind,
  drawn as a band on ``m_vs_similarity.png``.

Everything goes to ``DIR/report/`` and to an MLflow run, and the dataset card ``DIR/README.md``
is rewritten with these figures.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from factory import layout, storage
from factory.config import FactoryConfig, describe_validation_error
from factory.errors import FormatError, UserError
from factory.eval.compliance import spearman
from factory.eval.generator_figures import agg_figure, compliance_png
from factory.eval.real_reference import (
    RealReference,
    load_reference,
    measure_real_reference,
    reference_text,
)
from factory.faceworld.montage import montage
from factory.formats.dataset import open_dataset
from factory.formats.images import decode_image, encode_png
from factory.formats.shard_metadata import parquet_bytes
from factory.formats.shards import iter_shard, listed_shard_uris
from factory.models.identity import real_centers
from factory.report import format_table
from factory.runtime import mlflow_tracking_uri
from factory.synth.card import write_card
from factory.synth.judged import judged_dataset, judged_text
from factory.synth.layout import (
    ANALYSIS_FILE,
    CARD_FILE,
    COMPLIANCE_FIGURE,
    JUDGE_SIMILARITY_FILE,
    MANIFEST_FILE,
    PRIVACY_FIGURE,
    REPORT_DIR,
    SAMPLES_FIGURE,
    STATISTICS_FILE,
)
from factory.synth.inquiries import embed_inquiries, first_index_per_identity
from factory.synth.privacy import (
    privacy_threshold,
    sample_privacy,
    sample_privacy_text,
    synthetic_embeddings,
)
from factory.synth.reader import read_centers, read_manifest, read_stats
from factory.synth.verify import damage_message, verify_dataset
from factory.tracking import RunTracker
from factory.checkpoints.recognizer import load_judge
from factory.checkpoints.generator import load_generator

BIN_EDGES = np.round(np.linspace(-1.0, 1.0, 21), 2)


MONTAGE_IDENTITIES, MONTAGE_IMAGES, MONTAGE_SCALE = 8, 10, 3


@dataclass
class SampleTable:
    """One row per sample: the metadata the report works from, plus the montage's images."""

    labels: np.ndarray
    requested: np.ndarray
    to_inquiry: np.ndarray
    to_center: np.ndarray
    real: np.ndarray
    montage_rows: dict[int, list[np.ndarray]]


def read_samples(dataset: str, manifest: dict[str, Any]) -> SampleTable:
    """Stream every shard once and keep the few numbers per sample the report needs, and the
    images of the first identities for the montage."""
    columns: dict[str, list] = {"labels": [], "requested": [], "to_inquiry": [], "to_center": [],
                                "real": []}
    rows: dict[int, list[np.ndarray]] = {}
    for uri in listed_shard_uris(dataset, manifest):
        for sample in iter_shard(uri):
            source = f"{uri}:{sample['__key__']}"
            label, *numbers = _sample_numbers(sample.get("json", {}), source)
            if label in rows or len(rows) < MONTAGE_IDENTITIES:
                row = rows.setdefault(label, [])
                if len(row) < MONTAGE_IMAGES:
                    row.append(decode_image(sample.get("jpg", b""), source))
            for name, value in zip(("labels", "requested", "to_inquiry", "to_center"),
                                   (label, *numbers)):
                columns[name].append(value)
            columns["real"].append(bool(sample["json"].get("real", False)))
    return SampleTable(**{name: np.asarray(values) for name, values in columns.items()},
                       montage_rows=rows)


def _sample_numbers(meta: dict[str, Any], source: str) -> tuple[int, float, float, float]:
    """A sample's label, requested m and similarities to its inquiry and center."""
    try:
        return (int(meta["label"]), float(meta["m"]), float(meta["similarity_inquiry"]),
                float(meta["similarity_center"]))
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{source}: expected numeric label, m, similarity_inquiry and "
                          "similarity_center in the sample's json") from None


def samples_png(rows: dict[int, list[np.ndarray]], path: str) -> str:
    """Rows identities, columns their samples, enlarged for viewing."""
    sheet = montage(list(rows.values()))
    sheet = np.repeat(np.repeat(sheet, MONTAGE_SCALE, axis=0), MONTAGE_SCALE, axis=1)
    with open(path, "wb") as stream:
        stream.write(encode_png(sheet))
    return path


def statistics_rows(to_center: np.ndarray) -> list[list[Any]]:
    """The CemiFace table: per 0.1 similarity-to-center bin, count, mean and std."""
    rows = []
    bins = np.clip(np.digitize(to_center, BIN_EDGES) - 1, 0, len(BIN_EDGES) - 2)
    for index in range(len(BIN_EDGES) - 1):
        values = to_center[bins == index]
        if len(values):
            rows.append([f"[{BIN_EDGES[index]:+.1f}, {BIN_EDGES[index + 1]:+.1f})", len(values),
                         float(values.mean()), float(values.std())])
    return rows


def synthetic_centers(dataset: str, manifest: dict[str, Any]) -> tuple[np.ndarray, list[int]]:
    """The identity centers measured at synthesis time, with their labels."""
    centers, labels = [], []
    for index in range(len(manifest["shards"])):
        stats = read_stats(dataset, index)
        centers.append(read_centers(dataset, index, len(stats["labels"])))
        labels += stats["labels"]
    return np.concatenate(centers), labels


def recorded_config(dataset: str, manifest: dict[str, Any]) -> FactoryConfig:
    """The config a dataset's manifest records; FormatError naming the manifest if it is not
    one this code reads."""
    try:
        return FactoryConfig.model_validate(manifest["config"])
    except ValidationError as exc:
        raise FormatError(f"{storage.join(dataset, MANIFEST_FILE)}: its config is not one this "
                          f"version reads ({describe_validation_error(exc)})") from None


def held_out_embeddings(generator, inquiry_uri: str) -> np.ndarray:
    """E_id embeddings of the first image of each inquiry identity: real people the generator
    never trained on. Their maximum similarity to the real training centers is the level an
    unrelated real person reaches, against which the synthetic identities can be judged."""
    inquiry = open_dataset(inquiry_uri)
    firsts = list(first_index_per_identity(inquiry).values())
    return embed_inquiries(generator, inquiry, firsts)


def privacy_png(maxima: np.ndarray, threshold: float, path: str,
                reference: np.ndarray | None = None) -> str:
    figure = agg_figure(5.5, 3.6)
    axes = figure.add_subplot()
    bins = np.linspace(-1, 1, 41)
    axes.hist(maxima, bins=bins, color="tab:purple", label="synthetic identities")
    if reference is not None:
        axes.hist(reference, bins=bins, histtype="step", color="tab:green", linewidth=2,
                  label="held-out real identities")
    axes.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:g}")
    axes.set_xlabel("max cos(identity, real training identity center)")
    axes.set_ylabel("identities")
    axes.legend(fontsize=8)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def analyze(config: FactoryConfig, dataset: str) -> tuple[dict[str, Any], str]:
    """Compute the report; returns it and the printed text. The dataset is verified first
    (``factory verify``'s checks): the card copies the manifest's counts, so a dataset whose
    shards and manifest disagree is refused with verify's one line instead of described."""
    verification = verify_dataset(dataset)
    if verification.damaged:
        raise UserError(damage_message(verification))
    manifest = read_manifest(dataset)
    samples = read_samples(dataset, manifest)
    synthetic = ~samples.real
    generator = load_generator(manifest["generator_uri"])
    real_uri = config.synthesis.privacy.real_data or generator.meta.get("data", "")
    if not real_uri:
        raise FormatError(f"{manifest['generator_uri']}: records no training data; set "
                          "synthesis.privacy.real_data")
    centers, labels = synthetic_centers(dataset, manifest)
    real = real_centers(generator.encoder, generator.image_size, open_dataset(real_uri))
    inquiry_uri = layout.synthesis_inquiry_uri(recorded_config(dataset, manifest))
    # inquiries drawn from the training set itself are no reference: they are training people
    held_out = None if inquiry_uri == real_uri else held_out_embeddings(generator, inquiry_uri)
    reference = None if held_out is None else (held_out @ real.T).max(1)
    embeddings, metadata = synthetic_embeddings(generator.encoder, generator.image_size, dataset,
                                                manifest)
    per_sample = sample_privacy(
        embeddings, np.array([int(meta["label"]) for meta in metadata]), real,
        *privacy_threshold(config, generator.encoder, generator.image_size), held_out)
    threshold = config.synthesis.privacy.threshold
    similarity = centers @ real.T
    maxima, nearest = similarity.max(1), similarity.argmax(1)
    flagged = [{"label": labels[i], "nearest_real_label": int(nearest[i]),
                "similarity": round(float(maxima[i]), 4)}
               for i in np.argsort(-maxima) if maxima[i] >= threshold]
    cross = centers @ centers.T
    between = float(cross[~np.eye(len(cross), dtype=bool)].mean()) if len(cross) > 1 else 0.0
    table = statistics_rows(samples.to_center[synthetic])
    judge = load_judge(config.judge)
    real_reference = measured_reference(config, generator, judge)
    judged, judge_samples = (None, None) if judge is None else judged_dataset(
        judge, dataset, manifest, inquiry_uri, real_uri, threshold,
        privacy_threshold(config, judge, judge.input_size))
    report = {
        "dataset": dataset,
        "counts": {"samples": int(len(samples.labels)), "synthetic": int(synthetic.sum()),
                   "real_copies": int(samples.real.sum()),
                   "identities": int(len(np.unique(samples.labels))),
                   "shards": len(manifest["shards"])},
        "statistics": [{"bin": r[0], "count": r[1], "mean": r[2], "std": r[3]} for r in table],
        "similarity_to_center": {"mean": float(samples.to_center[synthetic].mean()),
                                 "std": float(samples.to_center[synthetic].std())},
        "m_spearman": spearman(samples.requested[synthetic], samples.to_inquiry[synthetic]),
        "between_identity_centers": between,
        "privacy": {"real_data": real_uri, "threshold": threshold,
                    "max_similarity": float(maxima.max()),
                    "mean_max_similarity": float(maxima.mean()),
                    "flagged": len(flagged), "flagged_identities": flagged[:100],
                    "held_out_reference": None if reference is None else {
                        "data": inquiry_uri, "identities": len(reference),
                        "max_similarity": float(reference.max()),
                        "mean_max_similarity": float(reference.mean()),
                        "at_or_above_threshold": int((reference >= threshold).sum())},
                    "per_sample": per_sample},
        "judge": None if judged is None else {
            "checkpoint": config.judge.checkpoint,
            "per_sample_file": f"{REPORT_DIR}/{JUDGE_SIMILARITY_FILE}", **judged},
        "real_reference": {name: value.summary() for name, value in real_reference.items()},
    }
    out = storage.join(dataset, REPORT_DIR)
    if judge_samples is not None:  # one row per sample: beside the report, not an MLflow artifact
        storage.write_bytes(storage.join(out, JUDGE_SIMILARITY_FILE), parquet_bytes(judge_samples))
    text = "\n".join([_report_text(report, table, out), *reference_text(real_reference)])
    e_id_real = real_reference.get("E_id")
    with tempfile.TemporaryDirectory() as scratch:
        files = {
            COMPLIANCE_FIGURE: compliance_png(
                np.round(samples.requested[synthetic] * 20) / 20,
                samples.to_inquiry[synthetic], between,
                os.path.join(scratch, COMPLIANCE_FIGURE), title=dataset,
                real_band=None if e_id_real is None else (e_id_real.overall.mean,
                                                          e_id_real.overall.std)),
            PRIVACY_FIGURE: privacy_png(maxima, threshold, os.path.join(scratch, PRIVACY_FIGURE),
                                        reference),
            SAMPLES_FIGURE: samples_png(samples.montage_rows,
                                        os.path.join(scratch, SAMPLES_FIGURE)),
        }
        for name, text_value in ((ANALYSIS_FILE, json.dumps(report, indent=2)),
                                 (STATISTICS_FILE, text + "\n")):
            files[name] = os.path.join(scratch, name)
            with open(files[name], "w") as stream:
                stream.write(text_value)
        tracker = RunTracker(True, mlflow_tracking_uri(config.runtime), config.runtime.experiment,
                             config.runtime.mlflow_artifact_location)
        tracker.start(f"analyze-{os.path.basename(dataset.rstrip('/'))}",
                      params={"dataset": dataset, "privacy": config.synthesis.privacy
                              .model_dump(mode="json")},
                      tags={"stage": "analyze",
                            "code_version": str(manifest.get("code_version"))})
        tracker.log_metrics({**report["counts"], "m_spearman": report["m_spearman"],
                             "privacy_flagged": len(flagged),
                             "privacy_max_similarity": report["privacy"]["max_similarity"],
                             **({} if per_sample["false_match"] is None else
                                {"privacy_false_match_rate": per_sample["false_match"]["rate"]}),
                             **({} if judged is None or judged["m_spearman"] is None else
                                {"judge_m_spearman": judged["m_spearman"]})})
        for name, path in files.items():
            with open(path, "rb") as stream:
                storage.write_bytes(storage.join(out, name), stream.read())
            tracker.log_artifact(path)
        tracker.end()
    record_privacy(dataset, manifest, report)
    write_card(dataset)
    return report, text


def measured_reference(config: FactoryConfig, generator, judge) -> dict[str, RealReference]:
    """The real genuine figures by E_id (the generator's) and the judge, on the configured
    reference set (none when it is not configured)."""
    reference = load_reference(layout.real_reference_uri(config),
                               config.generator.compliance.identities)
    if reference is None:
        return {}
    recognizers = {"E_id": generator.encoder, **({"judge": judge} if judge is not None else {})}
    return {name: measure_real_reference(encoder, name, reference, generator.image_size)
            for name, encoder in recognizers.items()}


def record_privacy(dataset: str, manifest: dict[str, Any], report: dict[str, Any]) -> None:
    """Put both privacy checks (center to center, every sample to the real centers), by E_id
    and by the judge, into the dataset's manifest, so they travel with the data."""
    def summary(privacy: dict[str, Any]) -> dict[str, Any]:
        return {"center_to_center": {key: privacy[key] for key in (
                    "threshold", "max_similarity", "mean_max_similarity", "flagged")},
                "per_sample": privacy["per_sample"]}

    manifest["privacy"] = {"real_data": report["privacy"]["real_data"],
                           "e_id": summary(report["privacy"]),
                           "judge": None if report["judge"] is None else
                           summary(report["judge"]["privacy"])}
    storage.write_text(storage.join(dataset, MANIFEST_FILE), json.dumps(manifest, indent=2))


def _report_text(report: dict[str, Any], table: list[list[Any]], out: str) -> str:
    counts, privacy = report["counts"], report["privacy"]
    lines = [
        f"{counts['samples']} samples ({counts['synthetic']} synthetic, {counts['real_copies']} "
        f"real copies), {counts['identities']} identities, {counts['shards']} shards",
        "",
        format_table(["similarity to center", "count", "mean", "std"], table),
        "",
        f"Spearman(requested m, similarity to inquiry) = {report['m_spearman']:.3f}; "
        f"between identity centers: {report['between_identity_centers']:.3f}",
        f"privacy: max similarity of a synthetic identity to a real one "
        f"{privacy['max_similarity']:.3f} (mean of maxima {privacy['mean_max_similarity']:.3f});"
        f" {privacy['flagged']} identities at or above {privacy['threshold']:g}",
        _reference_line(privacy["held_out_reference"]),
        sample_privacy_text("E_id", privacy["per_sample"]),
        f"written to {out}: analysis.json, statistics.txt, m_vs_similarity.png, privacy.png, "
        f"samples.png; the dataset card {storage.join(report['dataset'], CARD_FILE)} updated",
    ]
    if report["judge"] is not None:
        lines.insert(0, judged_text(report["judge"]))
        lines.insert(1, "E_id (as recorded in the shards):")
    return "\n".join(lines)


def _reference_line(reference: dict[str, Any] | None) -> str:
    if reference is None:
        return ("privacy reference: none (the inquiries come from the real training data, so "
                "they are training identities themselves)")
    return (f"privacy reference: {reference['identities']} held-out real identities reach "
            f"{reference['max_similarity']:.3f} at most (mean of maxima "
            f"{reference['mean_max_similarity']:.3f}); {reference['at_or_above_threshold']} of "
            "them at or above the threshold")
