"""Run an embedding function over .bin benchmarks with insightface's 10-fold protocol.

Benchmarks are decoded once at the model's input size and reused (the training loop evaluates
every few epochs). Any callable from uint8 NHWC RGB images to raw embeddings can be judged: a
recognizer backbone, or the raw-pixel baseline.

Which benchmarks a run reads is looked up here too (:func:`evaluation_benchmarks`,
:func:`validation_benchmarks`), so that training, evaluation and sweeps take the same lists
from one place below all of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from factory import layout, storage
from factory.config import FactoryConfig
from factory.errors import FormatError, UserError
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


TEST_AVERAGE, VALIDATION_AVERAGE = "avg_acc", "val_avg_acc"
"""The AVG of the test benchmarks (the papers' figure) and of the validation benchmarks (what
selection reads)."""


def accuracy_metrics(results: Sequence[VerificationResult],
                     average_key: str = TEST_AVERAGE) -> dict[str, float]:
    """``<benchmark>/acc`` (percent) per benchmark and their mean as ``average_key``: the AVG
    of the papers for test benchmarks, ``val_avg_acc`` for validation ones."""
    metrics = {f"{r.name}/acc": 100.0 * r.accuracy for r in results}
    for r in results:
        for far, tar in r.tar_at_far.items():
            if not np.isnan(tar):  # undefined without genuine or impostor pairs: no metric
                metrics[f"{r.name}/tar_far_{far_label(far)}"] = 100.0 * tar
    metrics[average_key] = float(np.mean([100.0 * r.accuracy for r in results]))
    return metrics


class EpochEvaluation:
    """What a training run evaluates at an epoch: the validation benchmarks whenever an
    evaluation is due, the test benchmarks only at the final epoch.

    Selection (ASHA, a sweep's ranking) sees every epoch's validation metrics; the test
    benchmarks are not even read from storage before the final epoch, so nothing chosen along
    the way can have looked at them. Each set is decoded once, when first needed.
    """

    def __init__(self, validation: Sequence[str], test: Sequence[str], size: int,
                 loader: Callable[[Sequence[str], int], list[Benchmark]] = load_benchmarks
                 ) -> None:
        self.uris = {VALIDATION_AVERAGE: list(validation), TEST_AVERAGE: list(test)}
        self.size = size
        self.loader = loader
        self.loaded: dict[str, list[Benchmark]] = {}

    def _results(self, key: str, embed: Embedder) -> list[VerificationResult]:
        if not self.uris[key]:
            return []
        if key not in self.loaded:
            self.loaded[key] = self.loader(self.uris[key], self.size)
        return evaluate_embedder(embed, self.loaded[key])

    def evaluate(self, embed: Embedder, final: bool
                 ) -> tuple[dict[str, float], list[VerificationResult]]:
        """Metrics of the validation benchmarks, and at the final epoch of the test ones too;
        with the results the ROC figure is drawn from (test at the end, else validation)."""
        metrics: dict[str, float] = {}
        validation = self._results(VALIDATION_AVERAGE, embed)
        if validation:
            metrics.update(accuracy_metrics(validation, VALIDATION_AVERAGE))
        test = self._results(TEST_AVERAGE, embed) if final else []
        if test:
            metrics.update(accuracy_metrics(test, TEST_AVERAGE))
        return metrics, test or validation


def evaluation_benchmarks(config: FactoryConfig) -> list[str]:
    """The test benchmarks: explicit ``evaluate.benchmarks`` (each must exist), else the face
    world's if present."""
    return _existing(config.evaluate.benchmarks,
                     lambda: layout.evaluation_benchmark_uris(config), "evaluate.benchmarks")


def validation_benchmarks(config: FactoryConfig) -> list[str]:
    """The validation benchmarks: explicit ``evaluate.validation_benchmarks`` (each must
    exist, and none may be a test benchmark), else the face world's if present."""
    uris = _existing(config.evaluate.validation_benchmarks,
                     lambda: layout.validation_benchmark_uris(config),
                     "evaluate.validation_benchmarks")
    names = {_stem(uri) for uri in evaluation_benchmarks(config)}
    shared = sorted(names & {_stem(uri) for uri in uris})
    if shared:
        raise UserError(f"evaluate.validation_benchmarks: {', '.join(shared)} is also a test "
                        "benchmark's name (validation and test must be different sets, and the "
                        "name keys the metrics)")
    return uris


def _existing(given: Sequence[str], defaults: Callable[[], list[str]], key: str) -> list[str]:
    """``given`` (each must exist), else those of ``defaults()`` that exist."""
    if given:
        for uri in given:
            if not storage.exists(uri):
                raise UserError(f"{key}: {uri}: benchmark file not found")
        return list(given)
    return [uri for uri in defaults() if storage.exists(uri)]


def _stem(uri: str) -> str:
    return os.path.basename(uri.rstrip("/")).removesuffix(".bin")
