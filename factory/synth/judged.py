"""A synthetic dataset as the independent judge sees it (``factory analyze`` with a judge).

The shards record similarities measured by E_id, the encoder the generator was conditioned on
and trained against. The judge (``judge.checkpoint``) trained on identities E_id never saw, so
its figures are the evidence: it re-embeds every synthetic image and every inquiry image and reports
Spearman(requested m, similarity to the inquiry) over samples of plain (not mixed) identities,
similarity to the judge's own identity centers, and the privacy check in its own space
(each synthetic identity's maximum similarity to any real training identity, beside the level
held-out real identities reach), and every sample against every real identity center with the
false-match rate at the judge's own threshold for FPR 1e-4 (:mod:`factory.synth.privacy`).

Each synthetic sample's two similarities by the judge are also kept per sample
(:func:`judge_samples`: ``report/judge_similarity.parquet``), keyed by ``shard`` and ``key`` so
that they join the shards' own Parquet metadata (:mod:`factory.formats.shard_metadata`) in one
line of DuckDB or pandas. They are a sidecar rather than columns of the shards' files: those are
fixed when their shard is written (its stats and the manifest record their sha256, ``factory
verify`` compares them with the tar), while the judge is optional, runs later and may run again
with another checkpoint; a sidecar keeps each shard's file the one its tar gives.

Memory: one float32 judge embedding per sample is kept (1 KiB per sample at 256-d).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from factory import storage
from factory.eval.compliance import spearman
from factory.errors import FormatError
from factory.eval.threshold import ThresholdEstimate
from factory.formats.dataset import open_dataset
from factory.formats.shard_metadata import read_dataset_metadata
from factory.models.identity import inquiry_tensor, real_centers
from factory.synth.inquiries import first_index_per_identity, identity_name
from factory.synth.privacy import BATCH, sample_privacy, sample_privacy_text, synthetic_embeddings


@torch.no_grad()
def _embed(judge: torch.nn.Module, images: list[np.ndarray]) -> np.ndarray:
    return judge(inquiry_tensor(np.stack(images), judge.input_size)).numpy()


def _centers(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length mean embedding per label, and the labels in row order."""
    unique, rows = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(unique), embeddings.shape[1]))
    np.add.at(sums, rows, embeddings)
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12), unique


JUDGE_SCHEMA = pa.schema([
    pa.field("shard", pa.int32(), nullable=False), pa.field("key", pa.string(), nullable=False),
    pa.field("judge_similarity_inquiry", pa.float64()),
    pa.field("judge_similarity_center", pa.float64(), nullable=False)])
"""The judge's sidecar: one row per synthetic sample (real copies are not judged), in shard
order; ``judge_similarity_inquiry`` is null for identity-mixup samples, which have no inquiry
image."""


def judge_samples(dataset: str, plain: np.ndarray, to_inquiry: np.ndarray,
                  to_center: np.ndarray) -> pa.Table:
    """The judge's per-sample similarities (:data:`JUDGE_SCHEMA`): ``to_center`` for every
    synthetic sample in shard order, ``to_inquiry`` for those ``plain`` marks. Their shard and
    key come from the shards' Parquet metadata, whose rows are in the same order."""
    ids = read_dataset_metadata(dataset, ["shard", "key", "real"])
    ids = ids.filter(pc.invert(ids["real"]))
    if ids.num_rows != len(to_center):
        raise FormatError(f"{dataset}: its Parquet metadata lists {ids.num_rows} synthetic "
                          f"samples, its shards hold {len(to_center)}; run factory verify")
    inquiry = np.full(len(to_center), np.nan)
    inquiry[plain] = to_inquiry
    return pa.Table.from_pydict({
        "shard": ids["shard"], "key": ids["key"],
        "judge_similarity_inquiry": pa.array(inquiry, pa.float64(), mask=~plain),
        "judge_similarity_center": pa.array(to_center, pa.float64())}, schema=JUDGE_SCHEMA)


def judged_inquiries(judge: torch.nn.Module, dataset: str, manifest: dict[str, Any],
                     inquiry_uri: str) -> tuple[np.ndarray, list[dict[str, Any]], np.ndarray,
                                                np.ndarray]:
    """Every synthetic sample's judge embedding and metadata, which samples are of plain
    identities with an inquiry image (``plain``), and those samples' cosine to their inquiry
    image, in ``plain`` order."""
    embeddings, metadata = synthetic_embeddings(judge, judge.input_size, dataset, manifest)
    inquiry = open_dataset(inquiry_uri)
    firsts = {identity_name(inquiry, label): index
              for label, index in first_index_per_identity(inquiry).items()}
    plain = np.array([not meta.get("mixup") and meta["inquiry"] in firsts for meta in metadata],
                     dtype=bool)
    names = sorted({meta["inquiry"] for meta, keep in zip(metadata, plain) if keep})
    inquiry_rows = {name: row for row, name in enumerate(names)}
    inquiry_embeddings = _embed(judge, [inquiry.image(firsts[name]) for name in names])
    to_inquiry = np.array([
        float(embeddings[i] @ inquiry_embeddings[inquiry_rows[metadata[i]["inquiry"]]])
        for i in np.flatnonzero(plain)])
    return embeddings, metadata, plain, to_inquiry


def judged_dataset(judge: torch.nn.Module, dataset: str, manifest: dict[str, Any],
                   inquiry_uri: str, real_uri: str, threshold: float,
                   false_match: tuple[ThresholdEstimate | None, str]
                   ) -> tuple[dict[str, Any], pa.Table]:
    """The judge's figures for one dataset (see the module docstring), and its per-sample
    similarities (:func:`judge_samples`); ``false_match`` is the judge's own impostor threshold
    for the per-sample check (or None and why not)."""
    embeddings, metadata, plain, to_inquiry = judged_inquiries(judge, dataset, manifest,
                                                               inquiry_uri)
    labels = np.array([int(meta["label"]) for meta in metadata])
    requested = np.array([float(meta["m"]) for meta in metadata])
    inquiry = open_dataset(inquiry_uri)
    firsts = {identity_name(inquiry, label): index
              for label, index in first_index_per_identity(inquiry).items()}
    centers, center_labels = _centers(embeddings, labels)
    rows = np.searchsorted(center_labels, labels)
    to_center = (embeddings * centers[rows]).sum(1)
    real = real_centers(judge, judge.input_size, open_dataset(real_uri), BATCH)
    maxima = (centers @ real.T).max(1)
    reference, held_out = None, None
    if storage.absolute(inquiry_uri) != storage.absolute(real_uri):
        held_out = _embed(judge, [inquiry.image(i) for i in firsts.values()])
        reference = (held_out @ real.T).max(1)
    figures = {
        "m_spearman": spearman(requested[plain], to_inquiry) if len(to_inquiry) > 1 else None,
        "similarity_to_inquiry_per_m": {
            f"{m:+.2f}": float(to_inquiry[requested[plain] == m].mean())
            for m in np.unique(requested[plain])},
        "similarity_to_center": {"mean": float(to_center.mean()), "std": float(to_center.std())},
        "privacy": {"threshold": threshold, "max_similarity": float(maxima.max()),
                    "mean_max_similarity": float(maxima.mean()),
                    "flagged": int((maxima >= threshold).sum()),
                    "held_out_reference": None if reference is None else {
                        "identities": len(reference), "max_similarity": float(reference.max()),
                        "mean_max_similarity": float(reference.mean())},
                    "per_sample": sample_privacy(embeddings, labels, real, *false_match,
                                                 held_out)},
    }
    return figures, judge_samples(dataset, plain, to_inquiry, to_center)


def judged_text(judged: dict[str, Any]) -> str:
    """The judge's lines of the analysis printout."""
    per_m = ", ".join(f"m {m}: {value:.3f}" for m, value in
                      judged["similarity_to_inquiry_per_m"].items())
    privacy = judged["privacy"]
    reference = privacy["held_out_reference"]
    spearman_text = ("n/a" if judged["m_spearman"] is None
                     else f"{judged['m_spearman']:.3f}")
    return "\n".join([
        f"judge: Spearman(requested m, similarity to inquiry) = {spearman_text}; mean "
        f"similarity to inquiry {per_m}",
        f"judge: similarity to own identity center {judged['similarity_to_center']['mean']:.3f}"
        f" +- {judged['similarity_to_center']['std']:.3f}; privacy: max similarity of a "
        f"synthetic identity to a real one {privacy['max_similarity']:.3f} (mean of maxima "
        f"{privacy['mean_max_similarity']:.3f}), {privacy['flagged']} at or above "
        f"{privacy['threshold']:g}" + ("" if reference is None else
                                        f"; held-out real identities: mean of maxima "
                                        f"{reference['mean_max_similarity']:.3f}"),
        sample_privacy_text("judge", privacy["per_sample"]),
    ])
