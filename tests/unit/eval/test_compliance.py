"""The m-compliance measurement on hand-made generators whose answer is known.

A toy encoder (a fixed orthonormal projection of the pixels, normalised) and a toy generator
that steers DDIM's clean-image estimate to an image whose toy embedding is
``normalise(m e + (1 - m) r)`` (e the inquiry's embedding, r a fixed unit vector): its measured
similarity rises with m. Variants ignore m or invert it. A measurement that leaked m, dropped the
shuffle, or mislabelled samples would fail these tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from factory.config import SamplingConfig
from factory.eval.compliance import (
    SampleSet,
    frechet_distance,
    frechet_identity_matched,
    measure_compliance,
)
from factory.eval.real_reference import ReferenceImages
from factory.models.identity import inquiry_tensor
from factory.checkpoints.generator import LoadedGenerator

SIZE, DIM = 8, 16
M_VALUES = [1.0, 0.5, 0.0, -0.5, -1.0]


class ToyEncoder(torch.nn.Module):
    """``normalise(W flatten(x))`` with orthonormal rows W: ``W^T e`` embeds back to e."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        basis, _ = torch.linalg.qr(torch.randn(3 * SIZE * SIZE, DIM,
                                               generator=torch.Generator().manual_seed(seed)))
        self.register_buffer("rows", basis.T.contiguous())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(images.flatten(1) @ self.rows.T, dim=-1)


class ToyGenerator(torch.nn.Module):
    """Predicts the noise that makes DDIM's x0 estimate ``W^T normalise(k e + (1 - k) r)``,
    with k = m (``mode='follow'``), -m (``'invert'``) or 0 (``'ignore'``)."""

    def __init__(self, encoder: ToyEncoder, scheduler: DDPMScheduler, mode: str) -> None:
        super().__init__()
        self.encoder, self.mode = encoder, mode
        self.alphas = scheduler.alphas_cumprod
        self.away = torch.nn.functional.normalize(torch.randn(DIM, generator=torch.Generator()
                                                              .manual_seed(99)), dim=0)

    def forward(self, noisy, timesteps, identity, m):
        k = {"follow": m, "invert": -m, "ignore": torch.zeros_like(m)}[self.mode][:, None]
        target = torch.nn.functional.normalize(k * identity + (1 - k) * self.away, dim=-1)
        clean = (target @ self.encoder.rows).reshape(noisy.shape)
        alpha = self.alphas[timesteps].reshape(-1, 1, 1, 1)
        return (noisy - alpha.sqrt() * clean) / (1 - alpha).sqrt()


def _toy(mode: str, judge_seed: int | None = None):
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
    encoder = ToyEncoder(seed=0)
    generator = LoadedGenerator("toy", ToyGenerator(encoder, scheduler, mode), scheduler,
                                encoder, {"image_size": SIZE})
    inquiries = np.random.default_rng(5).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    return generator, inquiries


def _measure(mode: str, **kwargs):
    generator, inquiries = _toy(mode)
    sampling = SamplingConfig(steps=4, batch_size=16)
    return measure_compliance(generator, inquiries, M_VALUES, 3, sampling, **kwargs)


def test_a_generator_that_follows_m_is_measured_as_following_it():
    result = _measure("follow", shuffled_control=True)
    e_id = result.by["E_id"]
    assert e_id.spearman > 0.9 and e_id.monotonic
    assert e_id.mean[0] > 0.99  # m = 1 lands on the inquiry's own embedding
    assert e_id.rank1[0] == 1.0
    assert e_id.spread[0] < 0.01  # seeds differ only by the final step's residual noise
    # The shuffled control feeds the same rows a permutation of m: the relation is gone.
    shuffled = result.controls["shuffled m"]["E_id"]
    assert abs(shuffled.spearman) < 0.3
    assert not shuffled.monotonic


def test_a_generator_that_ignores_m_gives_no_correlation_at_all():
    """Every m of an (inquiry, seed) pair shares its noise, so an m-blind generator makes the
    same image for every m: the rank correlation is zero up to float rounding between batches,
    which breaks ties at random."""
    result = _measure("ignore")
    assert abs(result.by["E_id"].spearman) < 0.02
    assert np.ptp(result.by["E_id"].mean) < 1e-6


def test_an_inverted_m_gives_a_negative_correlation():
    result = _measure("invert")
    assert result.by["E_id"].spearman < -0.9


def test_the_judge_measures_the_same_samples_with_its_own_embedding():
    generator, inquiries = _toy("follow")
    judge = ToyEncoder(seed=1)  # another projection: shares nothing with the toy E_id
    result = measure_compliance(generator, inquiries, M_VALUES, 2, SamplingConfig(steps=4),
                                judge=judge)
    assert result.headline.recognizer == "judge"
    assert set(result.by) == {"E_id", "judge"}
    # The toy generator steers E_id's embedding; a foreign projection sees far less of it.
    assert result.by["judge"].mean[0] < result.by["E_id"].mean[0]


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    rng = np.random.default_rng(0)
    first = rng.normal(size=(20000, 4))
    shift = np.array([1.0, -2.0, 0.0, 0.5])
    assert frechet_distance(first, first) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(first, rng.normal(size=(20000, 4)) + shift) == pytest.approx(
        float((shift ** 2).sum()), rel=0.05)
    # Equal means, twice the variance: (sqrt(2) - 1)^2 per dimension, 4 dimensions.
    wide = rng.normal(size=(20000, 4)) * np.sqrt(2.0)
    assert frechet_distance(first, wide) == pytest.approx(4 * (np.sqrt(2) - 1) ** 2, rel=0.1)


class _Photos:
    """A dataset of random photos: what the Frechet figures read from ``real``."""

    def __init__(self, count: int, seed: int) -> None:
        self.images = np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3),
                                                           dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> np.ndarray:
        return self.images[index]


def test_a_generator_returning_real_photos_of_its_inquiries_scores_the_identity_matched_floor():
    """3 held-out identities with 4 photos each; at m = +1 the 'generator' returns the photos
    the matched set picks (2 per identity, spread over the 4), so both figures agree; washed-out
    images at m = +1 score above it. Other m values do not enter."""
    rng = np.random.default_rng(0)
    genuine = rng.integers(0, 256, (12, SIZE, SIZE, 3), dtype=np.uint8)
    reference = ReferenceImages(references=genuine[::4], genuine=genuine,
                                owner=np.repeat(np.arange(3), 4), kind=np.array(["all"] * 12))
    inquiry = np.repeat(np.arange(3), 4)  # per inquiry: m = +1 twice, then m = 0 twice
    requested = np.tile([1.0, 1.0, 0.0, 0.0], 3)
    photos = inquiry_tensor(genuine[[0, 3, 0, 0, 4, 7, 4, 4, 8, 11, 8, 8]], SIZE)
    washed_out = 0.8 + 0.2 * torch.rand(12, 3, SIZE, SIZE)  # nearly white: unlike any photo
    encoder = ToyEncoder(seed=0)
    real = _Photos(40, seed=1)

    def figures(images):
        samples = SampleSet(inquiry, requested, np.tile([0, 1], 6), images, np.zeros((2, 1)))
        return frechet_identity_matched(encoder, samples, real, reference, SIZE)

    exact = figures(torch.where(torch.as_tensor(requested == 1.0)[:, None, None, None],
                                photos, washed_out))
    assert (exact["identities"], exact["per_identity"], exact["m"]) == (3, 2, 1.0)
    assert exact["synthetic_vs_real"] == pytest.approx(exact["matched_real_vs_real"], rel=1e-6)
    unlike = figures(washed_out)
    assert unlike["matched_real_vs_real"] == pytest.approx(exact["matched_real_vs_real"])
    assert unlike["synthetic_vs_real"] > 1.5 * unlike["matched_real_vs_real"]
