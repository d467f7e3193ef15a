"""The raw-pixel cosine baseline: what matching images by their pixels alone achieves.

The embedding of an image is its pixel vector at a small size, centred on its own mean (so
overall brightness does not count), scored with the same 10-fold protocol as a recognizer. The
face-world benchmarks are meant to defeat it: it must stay well below a trained model.
"""

from __future__ import annotations

import numpy as np

from factory import layout
from factory.config import FactoryConfig
from factory.eval.benchmarks import evaluate_embedder, load_benchmarks
from factory.eval.verification import VerificationResult


def pixel_embedding(images: np.ndarray) -> np.ndarray:
    """Flattened pixels of each image minus that image's mean."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat - flat.mean(axis=1, keepdims=True)


def run_pixel_baseline(config: FactoryConfig) -> list[VerificationResult]:
    """10-fold accuracy of raw pixels on the face world's benchmarks (with none, on
    ``evaluate.benchmarks``)."""
    benchmarks = load_benchmarks(layout.baseline_benchmark_uris(config), config.baseline.image_size)
    return evaluate_embedder(pixel_embedding, benchmarks)


def print_baseline(results: list[VerificationResult]) -> None:
    print("raw-pixel cosine baseline (10-fold accuracy, chance 50%)")
    for r in results:
        print(f"  {r.name:<16} {100 * r.accuracy:6.2f} +- {100 * r.accuracy_std:.2f}")
