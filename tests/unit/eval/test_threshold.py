"""E_id's impostor threshold at an FPR (the inquiry filter's ``fpr:1e-4`` and the privacy
false-match rate) and the per-sample privacy check built on it."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from factory.config import parse_fpr
from factory.errors import UserError
from factory.eval.threshold import (
    ThresholdEstimate,
    estimate_threshold,
    impostor_pairs,
    threshold_at_fpr,
    top_impostor_scores,
)
from factory.formats.verification_bin import read_bin
from factory.synth.privacy import sample_privacy, sample_privacy_text


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(embeddings: np.ndarray, identities: np.ndarray) -> np.ndarray:
    scores = embeddings @ embeddings.T
    i, j = np.triu_indices(len(identities), 1)
    keep = identities[i] != identities[j]
    return np.sort(scores[i[keep], j[keep]])[::-1]


def test_the_threshold_leaves_at_most_a_share_fpr_of_impostor_pairs_above_it(monkeypatch):
    monkeypatch.setattr("factory.eval.threshold.BLOCK", 64)  # several blocks
    rng = np.random.default_rng(0)
    identities = rng.integers(0, 60, size=300)
    embeddings = unit(rng.normal(size=(300, 16)))
    scores = brute_force(embeddings, identities)
    assert impostor_pairs(identities) == len(scores)
    fpr = 1e-3
    allowed = math.floor(fpr * len(scores))
    top = top_impostor_scores(embeddings, identities, allowed + 1)
    np.testing.assert_allclose(top, scores[:allowed + 1])
    threshold = threshold_at_fpr(top, len(scores), fpr)
    assert (scores > threshold).sum() == allowed <= fpr * len(scores)
    with pytest.raises(UserError, match="needs at least 1,000,000 impostor pairs"):
        threshold_at_fpr(top, len(scores), 1e-6)


def test_fpr_specs_parse_and_bad_ones_are_refused():
    assert parse_fpr("fpr:1e-4") == 1e-4 and parse_fpr("fpr:0.001") == 0.001
    for bad in ("fpr:0", "fpr:1.5", "1e-4", "fpr:"):
        with pytest.raises(ValueError, match="fpr:<rate>"):
            parse_fpr(bad)


def pixels(images: np.ndarray) -> np.ndarray:
    """A stand-in encoder: the images' pixels, centred and unit length."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    return unit(flat - flat.mean(1, keepdims=True))


def test_validation_images_with_identities_give_every_cross_identity_pair(world, tmp_path):
    uri = str(world / "faceworld" / "validation" / "val_tiny.bin")
    estimate = estimate_threshold(pixels, [uri], 32, 1e-3)
    identities = np.load(uri.replace(".bin", ".identities.npy"))
    scores = brute_force(pixels(read_bin(uri).decode(32)), identities)
    assert estimate.impostor_pairs == len(scores) > 3000 and estimate.images == 80
    assert estimate.threshold == pytest.approx(scores[math.floor(1e-3 * len(scores))], abs=1e-6)
    # the same .bin without its identities: only its 20 negative pairs are known impostors
    bare = tmp_path / "bare.bin"
    shutil.copy(uri, bare)
    assert estimate_threshold(pixels, [str(bare)], 32, 0.1).impostor_pairs == 20
    with pytest.raises(UserError, match="needs at least 10,000 impostor pairs"):
        estimate_threshold(pixels, [str(bare)], 32, 1e-4)


def test_every_sample_is_checked_and_a_copied_real_face_is_a_false_match():
    rng = np.random.default_rng(1)
    real = unit(rng.normal(size=(50, 32)))
    samples = unit(rng.normal(size=(40, 32)))
    samples[7] = real[3]  # one sample of identity 1 copies a real person; its center hides it
    labels = np.repeat(np.arange(8), 5)
    held_out = unit(rng.normal(size=(30, 32)))
    estimate = ThresholdEstimate(0.6, 1e-4, 10**6, 2000, ["val.bin"])
    record = sample_privacy(samples, labels, real, estimate, "", held_out)
    matched = record["false_match"]
    assert record["samples"] == 40 and record["max_similarity"] == pytest.approx(1.0)
    assert matched["samples"] == 1 and matched["identities"] == 1
    assert matched["rate"] == pytest.approx(1 / 40) and matched["held_out_rate"] == 0.0
    text = sample_privacy_text("E_id", record)
    assert "false-match rate at FPR 0.0001 (threshold 0.600): 2.50% of samples (1, in 1 of 8" \
           in text
    unmeasured = sample_privacy(samples, labels, real, None, "no validation benchmarks", None)
    assert unmeasured["false_match"] is None
    assert "not measured (no validation benchmarks)" in sample_privacy_text("E_id", unmeasured)
