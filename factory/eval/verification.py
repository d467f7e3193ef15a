"""Pair verification maths: insightface's 10-fold protocol, TAR@FAR and ROC curves.

The protocol is insightface's ``eval/verification.py``, reproduced exactly so that accuracies
compare with the papers':

1. each image is embedded together with its horizontal flip, the two raw embeddings are summed
   and the sum is L2-normalised;
2. pair ``i`` is rows ``2i`` and ``2i + 1``, scored by the squared L2 distance (in [0, 4]);
3. the pairs are split into 10 contiguous, unshuffled folds (sklearn ``KFold`` sizes);
4. for each fold, the threshold (grid ``0, 0.01, .., 3.99``) with the best accuracy on the
   other nine folds is chosen, the first one on ties; a pair is "same" iff ``dist < threshold``;
5. the accuracy on the held-out fold is recorded; the report is mean and std of the ten.

Everything here is plain numpy on arrays already in memory; reading ``.bin`` files is
:mod:`factory.formats.verification_bin`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLDS = np.arange(0, 4, 0.01)
DEFAULT_THRESHOLDS.setflags(write=False)
DEFAULT_FARS = (1e-3, 1e-4)
NUM_FOLDS = 10


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float64); all-zero rows stay zero, as in sklearn."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def flip_sum_embeddings(
    embed: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """``l2_normalize(embed(x) + embed(flip(x)))`` for uint8 ``[N, H, W, C]`` images.

    The raw embeddings of an image and of its mirror image (W axis reversed) are summed before
    normalising, as insightface does; averaging two normalised vectors would weigh them
    differently whenever their norms differ.
    """
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        flipped = np.ascontiguousarray(batch[:, :, ::-1])
        chunks.append(np.asarray(embed(batch)) + np.asarray(embed(flipped)))
    return l2_normalize(np.concatenate(chunks))


def pair_distances(embeddings: np.ndarray) -> np.ndarray:
    """Squared L2 distance of each pair (rows ``2i`` and ``2i + 1``), shape ``[N]``."""
    if len(embeddings) % 2:
        raise ValueError(f"pairs need an even number of embeddings, got {len(embeddings)}")
    difference = embeddings[0::2] - embeddings[1::2]
    return np.sum(difference * difference, axis=1)


def kfold_indices(n: int, n_folds: int = NUM_FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays of ``n_folds`` contiguous, unshuffled folds.

    Fold sizes are sklearn ``KFold(shuffle=False)``'s: ``n // n_folds`` each, and the first
    ``n % n_folds`` folds one larger.
    """
    if not 2 <= n_folds <= n:
        raise ValueError(f"need 2 <= n_folds <= n, got n_folds={n_folds}, n={n}")
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    indices = np.arange(n)
    return [
        (np.concatenate([indices[:lo], indices[hi:]]), indices[lo:hi])
        for lo, hi in zip(bounds[:-1], bounds[1:])
    ]


def ten_fold_accuracy(
    distances: np.ndarray,
    issame: np.ndarray,
    thresholds: np.ndarray = DEFAULT_THRESHOLDS,
    n_folds: int = NUM_FOLDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold held-out accuracies and the threshold each fold chose (see the module doc).

    Correct predictions are counted once per (threshold, fold); a fold's training count is the
    total minus its own, so every fold scores every threshold on exactly its nine other folds.
    Counts stand in for accuracies in the argmax: within one fold they differ by a constant
    factor, so the first maximum is the same threshold insightface picks.
    """
    distances, issame = np.asarray(distances), np.asarray(issame, dtype=bool)
    thresholds = np.asarray(thresholds)
    folds = kfold_indices(len(distances), n_folds)
    correct = (distances[None, :] < thresholds[:, None]) == issame[None, :]
    starts = [test[0] for _, test in folds]
    per_fold = np.add.reduceat(correct, starts, axis=1, dtype=np.int64)  # [thresholds, folds]
    train = per_fold.sum(axis=1, keepdims=True) - per_fold
    best = np.argmax(train, axis=0)
    sizes = np.array([len(test) for _, test in folds])
    accuracies = per_fold[best, np.arange(n_folds)] / sizes
    return accuracies, thresholds[best]


def tar_at_far(
    distances: np.ndarray, issame: np.ndarray, fars: Sequence[float] = DEFAULT_FARS
) -> dict[float, float]:
    """True-accept rate at the loosest threshold whose false-accept rate is at most each FAR.

    Computed over all pairs (no folds), with a threshold free to take any value: a pair is
    accepted iff ``dist < threshold``, and with ``k = floor(far * n_negatives)`` false accepts
    allowed, the threshold is the ``(k + 1)``-th smallest negative distance (infinite when
    every negative may be accepted). The FAR resolution is ``1 / n_negatives``: with 3,000
    negatives (a 6,000-pair benchmark) FAR 1e-4 allows zero false accepts, i.e. it reports the
    share of genuine pairs closer than the closest impostor pair, and FAR 1e-3 allows three.
    Without positives or negatives the value is NaN.
    """
    distances, issame = np.asarray(distances, dtype=np.float64), np.asarray(issame, dtype=bool)
    positives, negatives = distances[issame], np.sort(distances[~issame])
    result = {}
    for far in fars:
        if not len(positives) or not len(negatives):
            result[far] = float("nan")
            continue
        allowed = int(np.floor(far * len(negatives) + 1e-9))  # 1e-3 * 3000 is 3.0000000000000004
        threshold = negatives[allowed] if allowed < len(negatives) else np.inf
        result[far] = float(np.mean(positives < threshold))
    return result


def roc_curve(distances: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-accept rates, true-accept rates) as the threshold sweeps every distance.

    Thresholds are each distinct distance, then infinity, with "same" iff ``dist < threshold``,
    so the curve runs from (0, 0) to (1, 1). Rates are NaN for a class with no pairs.
    """
    distances, issame = np.asarray(distances, dtype=np.float64), np.asarray(issame, dtype=bool)
    thresholds = np.append(np.unique(distances), np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = [
            np.searchsorted(np.sort(distances[group]), thresholds, side="left") / group.sum()
            for group in (~issame, issame)
        ]
    return rates[0], rates[1]


def far_label(far: float) -> str:
    """A FAR written the way people say it: ``0.001`` -> ``"1e-3"``."""
    return np.format_float_scientific(far, trim="-", exp_digits=1)


def far_key(far: float) -> str:
    """Summary key of a FAR: ``1e-3`` -> ``"tar@far=1e-3"``."""
    return f"tar@far={far_label(far)}"


@dataclass
class VerificationResult:
    """The verification outcome of one benchmark.

    ``accuracy`` and ``accuracy_std`` are the mean and (population) std of the fold accuracies,
    as fractions in [0, 1]; ``tar_at_far`` maps each FAR to its TAR; ``fpr``/``tpr`` is the ROC.
    """

    name: str
    accuracy: float
    accuracy_std: float
    fold_accuracies: np.ndarray
    tar_at_far: dict[float, float]
    num_pairs: int
    fpr: np.ndarray
    tpr: np.ndarray

    def summary(self) -> dict[str, str | int | float | None]:
        """Plain JSON-ready values: name, ``acc``, ``acc_std``, ``num_pairs``, ``tar@far=..``.

        A TAR the benchmark cannot define (it has no genuine or no impostor pairs) is None,
        JSON ``null``, with a ``note`` saying why: a bare NaN would make the file invalid JSON.
        """
        summary: dict[str, str | int | float | None] = {
            "name": self.name,
            "acc": float(self.accuracy),
            "acc_std": float(self.accuracy_std),
            "num_pairs": int(self.num_pairs),
        }
        summary.update({far_key(far): None if np.isnan(tar) else float(tar)
                        for far, tar in self.tar_at_far.items()})
        if any(np.isnan(tar) for tar in self.tar_at_far.values()):
            summary["note"] = "TAR@FAR undefined: the benchmark needs both genuine and " \
                              "impostor pairs"
        return summary


def evaluate_pairs(embeddings: np.ndarray, issame: np.ndarray, name: str) -> VerificationResult:
    """Score L2-normalised embeddings (pairs ``2i``, ``2i + 1``) against ``issame``."""
    issame = np.asarray(issame, dtype=bool)
    distances = pair_distances(embeddings)
    if len(distances) != len(issame):
        raise ValueError(f"{name}: {len(distances)} pairs of embeddings but {len(issame)} labels")
    folds, _ = ten_fold_accuracy(distances, issame)
    fpr, tpr = roc_curve(distances, issame)
    return VerificationResult(
        name=name,
        accuracy=float(np.mean(folds)),
        accuracy_std=float(np.std(folds)),
        fold_accuracies=folds,
        tar_at_far=tar_at_far(distances, issame),
        num_pairs=len(issame),
        fpr=fpr,
        tpr=tpr,
    )


def plot_roc(results: Sequence[VerificationResult], path: str) -> str:
    """Draw each result's ROC (TAR against log FAR) into a PNG at local ``path``; returns it.

    The figure is drawn on matplotlib's Agg canvas directly, without pyplot, so it needs no
    display and changes no process-wide backend or figure state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for result in results:
        label = f"{result.name} ({100 * result.accuracy:.2f}%)"
        axes.plot(result.fpr, result.tpr, label=label)  # log axis hides the FAR = 0 point
    axes.set_xscale("log")
    axes.set_xlim(1e-4, 1.0)
    axes.set_ylim(0.0, 1.0)
    axes.set_xlabel("false accept rate")
    axes.set_ylabel("true accept rate")
    axes.grid(True, which="both", alpha=0.3)
    if results:
        axes.legend(loc="lower right")
    figure.savefig(path, dpi=100)
    return path
