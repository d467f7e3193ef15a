"""Run an embedding function over .bin benchmarks with insightface's 10-fold protocol.

Benchmarks are decoded once at the model's input size and reused (the training loop evaluates
every few epochs). Any callable from uint8 NHWC RGB images to raw embeddings can be judged: a
recognizer backbone, or the raw-pixel baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from factory.errors import FormatError
from factory.eval.verification import (
    NUM_FOLDS,
    VerificationResult,
    evaluate_pairs,
    far_label,
    flip_sum_embeddings,
)
from factory.formats.verification_bin import read_bin
from factory.models.iresnet import preprocess

Embedder = Callable[[np.ndarray], np.ndarray]


@dataclass
class Benchmark:
    """A decoded verification benchmark: 2N images, pair i = (2i, 2i + 1)."""

    name: str
    images: np.ndarray
    issame: np.ndarray


def load_benchmarks(uris: Sequence[str], size: int) -> list[Benchmark]:
    """Read and decode .bin files at ``size`` x ``size`` (restricted unpickling, see formats);
    FormatError for a benchmark with fewer pairs than the protocol has folds."""
    benchmarks = []
    for uri in uris:
        pairs = read_bin(uri)
        if pairs.num_pairs < NUM_FOLDS:
            raise FormatError(f"{uri}: {pairs.num_pairs} pairs; the {NUM_FOLDS}-fold "
                              f"verification protocol needs at least {NUM_FOLDS}")
        benchmarks.append(Benchmark(pairs.name, pairs.decode(size), np.asarray(pairs.issame)))
    return benchmarks


def backbone_embedder(backbone: torch.nn.Module, device: torch.device | str = "cpu") -> Embedder:
    """Raw (unnormalised) embeddings of a backbone, in eval mode, without gradients."""

    def embed(images: np.ndarray) -> np.ndarray:
        backbone.eval()
        with torch.inference_mode():
            return backbone(preprocess(images).to(device)).float().cpu().numpy()

    return embed


def evaluate_embedder(
    embed: Embedder, benchmarks: Sequence[Benchmark], batch_size: int = 256
) -> list[VerificationResult]:
    """10-fold verification of one embedding function on every benchmark."""
    return [
        evaluate_pairs(flip_sum_embeddings(embed, b.images, batch_size), b.issame, b.name)
        for b in benchmarks
    ]


def accuracy_metrics(results: Sequence[VerificationResult]) -> dict[str, float]:
    """``<benchmark>/acc`` (percent) per benchmark and ``avg_acc``, the AVG of the papers."""
    metrics = {f"{r.name}/acc": 100.0 * r.accuracy for r in results}
    for r in results:
        for far, tar in r.tar_at_far.items():
            if not np.isnan(tar):  # undefined without genuine or impostor pairs: no metric
                metrics[f"{r.name}/tar_far_{far_label(far)}"] = 100.0 * tar
    metrics["avg_acc"] = float(np.mean([100.0 * r.accuracy for r in results]))
    return metrics
