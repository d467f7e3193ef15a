"""A similarity threshold from an encoder's own impostor statistics: the score above which at
most a share ``fpr`` of impostor pairs (two images of different people) fall.

This is how DCFace arrived at its 0.3 inquiry filter (its recognizer's threshold at a false
positive rate of 1e-4), and how the field counts false matches of synthetic faces against real
identities. One estimate serves both: the synthesis inquiry filter
(``synthesis.inquiry.max_similarity: "fpr:1e-4"``) and the per-sample privacy check of
``factory analyze``.

Impostor pairs come from validation benchmarks: with the identity of every image (the face
world writes ``<name>.identities.npy`` beside each validation ``.bin``), every pair of images of
different identities is one, across benchmarks too (their people are disjoint), so 2,400 images
give about 2.9 million pairs. A ``.bin`` without that file contributes its own negative pairs
only. An FPR below one over the number of impostor pairs cannot be estimated and is refused.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from factory import layout, storage
from factory.config import FactoryConfig
from factory.errors import FormatError, UserError
from factory.formats.verification_bin import IDENTITIES_SUFFIX, read_bin

BLOCK = 1024

Encode = Callable[[np.ndarray], np.ndarray]
"""uint8 NHWC images -> unit-length embeddings, one row each."""


@dataclass
class ThresholdEstimate:
    """A threshold at a false positive rate, with what it was estimated from."""

    threshold: float
    fpr: float
    impostor_pairs: int
    images: int
    benchmarks: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def _identities(uri: str, images: int) -> np.ndarray | None:
    """The identity of each image of a .bin, from its side file; None when there is none."""
    side = uri.removesuffix(".bin") + IDENTITIES_SUFFIX
    if not storage.exists(side):
        return None
    try:
        ids = np.load(io.BytesIO(storage.read_bytes(side)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FormatError(f"{side}: not a readable .npy array ({exc})") from None
    if ids.ndim != 1 or len(ids) != images or ids.dtype.kind not in "iu":
        raise FormatError(f"{side}: expected {images} integer identities, one per image of "
                          f"{uri}, found shape {ids.shape} of {ids.dtype}")
    return ids.astype(np.int64)


def impostor_pairs(identities: np.ndarray) -> int:
    """How many pairs of rows have different identities."""
    _, counts = np.unique(identities, return_counts=True)
    n = len(identities)
    return n * (n - 1) // 2 - int((counts * (counts - 1) // 2).sum())


def top_impostor_scores(embeddings: np.ndarray, identities: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` largest cosine scores over all pairs of rows with different identities,
    largest first; blockwise, so memory stays at a block of rows against all."""
    n = len(identities)
    top = np.empty(0, dtype=np.float64)
    for start in range(0, n, BLOCK):
        rows = slice(start, min(n, start + BLOCK))
        scores = embeddings[rows] @ embeddings.T
        index = np.arange(rows.start, rows.stop)[:, None]
        upper = np.arange(n)[None, :] > index
        different = identities[rows][:, None] != identities[None, :]
        top = np.concatenate([top, scores[upper & different].astype(np.float64)])
        if len(top) > keep:
            top = np.partition(top, len(top) - keep)[-keep:]
    return np.sort(top)[::-1]


def threshold_at_fpr(top: np.ndarray, pairs: int, fpr: float) -> float:
    """The (k+1)-th largest impostor score, k = floor(fpr x pairs): at most k pairs, a share
    ``fpr``, score above it. ``top`` holds (at least) the k+1 largest of the ``pairs`` scores.
    UserError when there are too few pairs to estimate ``fpr``."""
    allowed = allowed_pairs(pairs, fpr)
    return float(np.sort(top)[::-1][allowed])


def allowed_pairs(pairs: int, fpr: float) -> int:
    allowed = math.floor(fpr * pairs)
    if allowed < 1:
        raise UserError(f"a threshold at FPR {fpr:g} needs at least {math.ceil(1 / fpr):,} "
                        f"impostor pairs; the validation benchmarks give {pairs:,} (use larger "
                        "benchmarks with identities, or a larger FPR)")
    return allowed


def estimate_threshold(encode: Encode, uris: Sequence[str], size: int, fpr: float
                       ) -> ThresholdEstimate:
    """The encoder's threshold at ``fpr`` on the given validation benchmarks (decoded at
    ``size``): every cross-identity pair of the benchmarks with identities (across benchmarks
    too), and the negative pairs of those without."""
    if not uris:
        raise UserError("no validation benchmarks to estimate a threshold from (build the face "
                        "world's, or set synthesis.threshold_benchmarks)")
    labelled, identities, negatives, images, offset = [], [], [], 0, 0
    for uri in uris:
        pairs = read_bin(uri)
        decoded = pairs.decode(size)
        images += len(decoded)
        embeddings = np.asarray(encode(decoded), dtype=np.float64)
        ids = _identities(uri, len(decoded))
        if ids is None:
            negative = ~np.asarray(pairs.issame, dtype=bool)
            negatives.append((embeddings[0::2] * embeddings[1::2]).sum(1)[negative])
            continue
        labelled.append(embeddings)
        identities.append(ids - ids.min() + offset)
        offset = int(identities[-1].max()) + 1
    loose = np.concatenate(negatives) if negatives else np.empty(0)
    total = len(loose)
    top = loose
    if labelled:
        stacked, ids = np.concatenate(labelled), np.concatenate(identities)
        total += impostor_pairs(ids)
        pooled = top_impostor_scores(stacked, ids, allowed_pairs(total, fpr) + 1)
        top = np.concatenate([pooled, loose])
    threshold = threshold_at_fpr(top, total, fpr)
    return ThresholdEstimate(round(threshold, 6), fpr, total, images, list(uris))


def encoder_threshold(config: FactoryConfig, encoder: Callable, image_size: int, fpr: float
                      ) -> ThresholdEstimate:
    """The threshold of an identity encoder (E_id or the judge, unit-length output) at ``fpr``
    on ``synthesis.threshold_benchmarks`` (default: the face world's validation benchmarks)."""
    from factory.models.identity import encode_images

    uris = layout.threshold_benchmark_uris(config)
    missing = [uri for uri in uris if not storage.exists(uri)]
    if missing:
        raise UserError(f"synthesis.threshold_benchmarks: {missing[0]} not found (a threshold "
                        f"at FPR {fpr:g} is estimated on validation benchmarks: build the face "
                        "world's with `factory faceworld`, or list .bin files there)")
    return estimate_threshold(lambda images: encode_images(encoder, image_size, images), uris,
                              image_size, fpr)
