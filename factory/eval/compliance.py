"""m-compliance of a generator: does the measured similarity follow the requested m?

For held-out inquiry identities (never seen in training), every requested m and several seeds,
sample once, then let each recognizer measure the same images:

* E_id, the encoder the generator was conditioned on and trained against, and
* the judge (``judge.checkpoint``), a recognizer trained on identities E_id and the generator
  never saw (the face world's judge-train set; they share the renderer only); its figures are
  the evidence, since a similarity the generator was optimised against proves little.

Per recognizer: mean and std of cos(inquiry, sample) per m, whether the means fall monotonically
as m falls, Spearman between requested m and measured similarity over all samples, the mean
similarity between *different* inquiries (what "another person" looks like to it), rank-1
identification per m (is a sample's nearest inquiry its own?) and the intra-identity spread per m
(1 - mean pairwise cosine between the seeds of one inquiry at one m).

The scale every m is read on: the real reference (:mod:`factory.eval.real_reference`), real
photos of held-out identities measured against their own reference image by the same two
recognizers, per nuisance kind and over all.

Controls that should show nothing: the same seeds sampled with m shuffled across the samples
(the labels keep the requested m), and optionally a lambda = 0 generator. Quality: the Frechet
distance between the samples and as many real training images in the judge's feature space,
beside the distance between two disjoint real sets of that size (the floor); and, since a
sample set drawn from a few inquiries differs from many identities' photos whatever its realism,
the highest m's samples beside real photos with the same identity structure
(:func:`frechet_identity_matched`). The trajectory
(per m, the E_id similarity of each DDIM step's x0 estimate) shows where along the sampling the
similarity is decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from factory.config import SamplingConfig
from factory.errors import FormatError
from factory.eval.embedding import embed, identity_spread
from factory.eval.real_reference import ReferenceImages, RealReference, measure_real_reference
from factory.formats.dataset import FaceDataset
from factory.models.identity import inquiry_tensor
from factory.models.inference import InferenceSettings, prepare
from factory.models.sampling import (
    autocast_context,
    guidance_options,
    sample_images,
    solver_scheduler,
)
from factory.checkpoints.generator import LoadedGenerator

SHUFFLE_SEED = 2024


@dataclass
class SampleSet:
    """Samples of every (inquiry, m, seed) row, with what each was asked for."""

    inquiry: np.ndarray  # [N] index of the inquiry each sample belongs to
    requested: np.ndarray  # [N] the m each sample is labelled with
    seed_index: np.ndarray  # [N] which of the seeds of its (inquiry, m)
    images: torch.Tensor  # [N, 3, S, S] in [-1, 1]
    trajectory: np.ndarray  # [len(m_values), steps]: mean E_id cos of each step's x0 estimate


@dataclass
class Measured:
    """One recognizer's measurements of a sample set."""

    recognizer: str
    m_values: list[float]
    mean: list[float]
    std: list[float]
    spread: list[float]  # per m: 1 - mean pairwise cos between the seeds of one (inquiry, m)
    rank1: list[float]  # per m: share of samples whose most similar inquiry is their own
    spearman: float
    monotonic: bool
    between_identities: float
    measured: list[float] = field(repr=False)

    def at(self, m: float) -> dict[str, float] | None:
        """Mean similarity and rank-1 at one requested m (None if it was not requested)."""
        if m not in self.m_values:
            return None
        column = self.m_values.index(m)
        return {"mean": self.mean[column], "rank1": self.rank1[column]}

    def summary(self) -> dict:
        document = asdict(self)
        del document["measured"]
        return document


@dataclass
class Compliance:
    """The report's numbers: the samples' measurements by E_id and the judge, and controls."""

    m_values: list[float]
    requested: list[float]
    sampling: dict  # the SamplingConfig the samples were drawn with
    trajectory_t: list[int]  # the DDIM timesteps, first to last
    trajectory: list[list[float]]  # per m, per step: mean cos(E_id(inquiry), E_id(x0_hat))
    by: dict[str, Measured]  # "E_id", and "judge" when one is configured
    controls: dict[str, dict[str, Measured]] = field(default_factory=dict)
    frechet: dict[str, float] | None = None
    real: dict[str, RealReference] = field(default_factory=dict)  # by recognizer
    frechet_matched: dict[str, float] | None = None  # frechet_identity_matched

    @property
    def headline(self) -> Measured:
        """The judge's measurements where there is a judge, else E_id's."""
        return self.by.get("judge", self.by["E_id"])

    def summary(self) -> dict:
        return {
            "m_values": self.m_values, "sampling": self.sampling,
            "headline": self.headline.recognizer,
            "measured_by": {name: value.summary() for name, value in self.by.items()},
            "controls": {control: {name: value.summary() for name, value in views.items()}
                         for control, views in self.controls.items()},
            "frechet": self.frechet, "frechet_identity_matched": self.frechet_matched,
            "real_reference": {name: value.summary() for name, value in self.real.items()},
            "trajectory_t": self.trajectory_t, "trajectory": self.trajectory,
        }


def first_image_per_identity(dataset: FaceDataset, count: int, skip: int = 0) -> np.ndarray:
    """``[count, H, W, 3]`` uint8: the first image of each of ``count`` identities, after the
    first ``skip`` identities (in order of first appearance)."""
    firsts: dict[int, int] = {}
    for index, label in enumerate(dataset.labels):
        firsts.setdefault(int(label), index)
        if len(firsts) == skip + count:
            break
    chosen = list(firsts.values())[skip:]
    if len(chosen) < 2:
        raise FormatError(f"m-compliance needs at least two inquiry identities after the first "
                          f"{skip}; the inquiry set has {len(firsts)} (set "
                          "generator.compliance.first_identity and validation_identities to "
                          "fit it)")
    return np.stack([dataset.image(index) for index in chosen])


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation with average ranks for ties."""

    def ranks(values: np.ndarray) -> np.ndarray:
        order = np.argsort(values, kind="mergesort")
        ranked = np.empty(len(values))
        ranked[order] = np.arange(len(values), dtype=float)
        for value in np.unique(values):
            tied = values == value
            ranked[tied] = ranked[tied].mean()
        return ranked

    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


@torch.no_grad()
def draw_samples(generator: LoadedGenerator, inquiries: np.ndarray, m_values: Sequence[float],
                 seeds: int, sampling: SamplingConfig, shuffle_m: bool = False,
                 device: torch.device | str = "cpu", seed_offset: int = 0) -> SampleSet:
    """Sample every (inquiry, m, seed) row.

    Seeds are unique per (inquiry, seed index) and shared by every m of that pair, so the m
    columns differ only by the condition. With ``shuffle_m`` the m fed to the sampler is a fixed
    permutation of the requested ones across all rows, while the labels keep the requested m:
    whatever relation then remains between label and measurement is not the model's.
    ``seed_offset`` shifts every seed: another draw of the same protocol (run-to-run spread).
    """
    settings = prepare(generator, sampling, device)
    images = inquiry_tensor(inquiries, generator.image_size).to(device)
    identity = generator.encoder(images)
    rows = [(i, float(m), s) for i in range(len(identity)) for m in m_values for s in range(seeds)]
    requested = np.array([r[1] for r in rows])
    fed = (np.random.default_rng(SHUFFLE_SEED).permutation(requested) if shuffle_m
           else requested)
    m_column = {float(m): column for column, m in enumerate(m_values)}
    columns = np.array([m_column[r[1]] for r in rows])
    step_sums = np.zeros((len(m_values), sampling.steps))
    batches = []
    for start in range(0, len(rows), settings.batch_size):
        chunk = rows[start:start + settings.batch_size]
        index = torch.tensor([r[0] for r in chunk], device=device)
        m = torch.tensor(fed[start:start + len(chunk)], dtype=torch.float32, device=device)
        per_step: list[torch.Tensor] = []  # [B] similarities of each step's x0 estimate
        batches.append(sample_images(
            generator.model, generator.scheduler, identity[index], m,
            [10_000 * r[0] + r[2] + seed_offset for r in chunk], generator.image_size, sampling.steps,
            sampling.eta, sampling.identity_handoff, generator.encoder,
            lambda _, estimate: per_step.append(_similarity(generator, settings, estimate,
                                                            identity[index])),
            solver=sampling.solver, **guidance_options(sampling),
            **settings.sampler_options()))
        along = torch.stack(per_step).cpu().numpy()  # [steps, B]
        chunk_columns = columns[start:start + len(chunk)]
        for column in np.unique(chunk_columns):
            step_sums[column] += along[:, chunk_columns == column].sum(axis=1)
    return SampleSet(
        inquiry=np.array([r[0] for r in rows]), requested=requested,
        seed_index=np.array([r[2] for r in rows]), images=torch.cat(batches).cpu(),
        trajectory=step_sums / (len(identity) * seeds))


def _similarity(generator: LoadedGenerator, settings: InferenceSettings, images: torch.Tensor,
                identity: torch.Tensor) -> torch.Tensor:
    """cos(E_id(images), identity) row by row, E_id run as the sampler runs it."""
    with autocast_context(torch.device(settings.device), settings.autocast):
        return (generator.encoder(images).float() * identity).sum(-1)


def measure(encoder: torch.nn.Module, recognizer: str, inquiries: torch.Tensor,
            samples: SampleSet, m_values: Sequence[float]) -> Measured:
    """``recognizer``'s view of ``samples``: similarity to their inquiry, rank-1, spread."""
    reference = embed(encoder, inquiries)
    embedded = embed(encoder, samples.images)
    to_all = embedded @ reference.T  # [N, inquiries]
    similarity = to_all[np.arange(len(embedded)), samples.inquiry]
    own_nearest = to_all.argmax(1) == samples.inquiry
    means, stds, spreads, rank1 = [], [], [], []
    for m in m_values:
        chosen = samples.requested == m
        means.append(float(similarity[chosen].mean()))
        stds.append(float(similarity[chosen].std()))
        rank1.append(float(own_nearest[chosen].mean()))
        spreads.append(identity_spread(embedded[chosen], samples.inquiry[chosen]))
    order = np.argsort(-np.asarray(m_values, float))
    cross = reference @ reference.T
    return Measured(
        recognizer=recognizer, m_values=[float(m) for m in m_values], mean=means, std=stds,
        spread=spreads, rank1=rank1,
        spearman=spearman(samples.requested, similarity),
        monotonic=bool(np.all(np.diff(np.asarray(means)[order]) < 0)),
        between_identities=float(cross[~np.eye(len(cross), dtype=bool)].mean()),
        measured=[float(v) for v in similarity])


def frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets ``[N, D]`` (FID's
    formula): ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``, with the matrix
    square roots taken from symmetric eigendecompositions (both covariances are PSD)."""
    mu1, mu2 = first.mean(0), second.mean(0)
    s1, s2 = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    root1 = _psd_sqrt(s1)
    cross_trace = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0.0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * cross_trace)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_against_real(encoder: torch.nn.Module, samples: torch.Tensor,
                         real: FaceDataset, image_size: int) -> dict[str, float]:
    """Frechet distance of the samples to as many real images, and of two disjoint real sets of
    that size to each other (the floor the synthetic figure is read against). With fewer than
    twice as many real images as samples, an even subset of the samples is compared. Real
    images are spread evenly over the dataset, so every identity range is represented."""
    count = min(len(samples), len(real) // 2)
    if count < 2:
        raise ValueError("the Frechet distance needs at least 4 real images and 2 samples")
    chosen = np.linspace(0, len(samples) - 1, count).round().astype(int)
    first, second = real_features(encoder, real, count, image_size)
    synthetic = embed(encoder, samples[torch.as_tensor(chosen)])
    return {"images": count, "synthetic_vs_real": frechet_distance(synthetic, first),
            "real_vs_real": frechet_distance(second, first)}


def real_features(encoder: torch.nn.Module, real: FaceDataset, count: int,
                  image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of two disjoint sets of ``count`` real images, interleaved over the dataset."""
    picks = np.linspace(0, len(real) - 1, 2 * count).round().astype(int)
    features = embed(encoder, inquiry_tensor(np.stack([real.image(int(i)) for i in picks]),
                                             image_size))
    return features[0::2], features[1::2]


def frechet_identity_matched(encoder: torch.nn.Module, samples: SampleSet, real: FaceDataset,
                             reference: ReferenceImages, image_size: int) -> dict[str, float]:
    """The highest m's samples against real training images, beside real photos with the same
    identity structure against the same images: as many held-out real identities as the
    samples have inquiries, as many photos each as the samples have seeds (spread over each
    identity's photos, so over its nuisance kinds). The second figure is what a generator that
    returned real photos of its inquiries would score, so the ratio reads realism alone; the
    all-m figure also counts that the samples come from a few identities, which no generator
    can change."""
    top = samples.requested == samples.requested.max()
    identities = min(len(np.unique(samples.inquiry[top])), len(reference.references))
    chosen = top & (samples.inquiry < identities)
    per_identity = min(int(chosen.sum()) // identities,
                       int(np.bincount(reference.owner)[:identities].min()))
    if per_identity < 1 or identities * per_identity < 2:
        raise ValueError("the identity-matched Frechet distance needs at least 2 samples at "
                         "the highest m and a real reference image per identity")
    keep = np.concatenate([np.flatnonzero(chosen & (samples.inquiry == owner))[:per_identity]
                           for owner in range(identities)])
    matched = np.concatenate([
        np.flatnonzero(reference.owner == owner)[np.linspace(
            0, (reference.owner == owner).sum() - 1, per_identity).round().astype(int)]
        for owner in range(identities)])
    # the same real training images as the all-m figure's
    first, _ = real_features(encoder, real, min(len(samples.images), len(real) // 2), image_size)
    synthetic = embed(encoder, samples.images[torch.as_tensor(keep)])
    photos = embed(encoder, inquiry_tensor(reference.genuine[matched], image_size))
    return {"m": float(samples.requested.max()), "identities": identities,
            "per_identity": per_identity,
            "synthetic_vs_real": frechet_distance(synthetic, first),
            "matched_real_vs_real": frechet_distance(photos, first)}


def measure_compliance(generator: LoadedGenerator, inquiries: np.ndarray,
                       m_values: Sequence[float], seeds: int, sampling: SamplingConfig,
                       judge: torch.nn.Module | None = None, shuffled_control: bool = False,
                       control_generators: dict[str, LoadedGenerator] | None = None,
                       real: FaceDataset | None = None,
                       reference: ReferenceImages | None = None) -> Compliance:
    """Sample, measure with E_id (and the judge), and add the requested controls.

    ``control_generators`` are other checkpoints (for example the lambda = 0 generator) sampled
    under the same protocol and measured by the same recognizers; ``real`` enables the Frechet
    distance in the judge's feature space (E_id's when there is no judge); ``reference`` adds
    the real genuine figures of both recognizers.
    """
    samples = draw_samples(generator, inquiries, m_values, seeds, sampling)
    images = inquiry_tensor(inquiries, generator.image_size)
    recognizers = {"E_id": generator.encoder, **({"judge": judge} if judge is not None else {})}

    def views(drawn: SampleSet) -> dict[str, Measured]:
        return {name: measure(encoder, name, images, drawn, m_values)
                for name, encoder in recognizers.items()}

    controls = {}
    if shuffled_control:
        controls["shuffled m"] = views(draw_samples(generator, inquiries, m_values, seeds,
                                                    sampling, shuffle_m=True))
    for name, other in (control_generators or {}).items():
        controls[name] = views(draw_samples(other, inquiries, m_values, seeds, sampling))
    frechet = frechet_matched = None
    quality_encoder = judge if judge is not None else generator.encoder
    if real is not None:
        frechet = frechet_against_real(quality_encoder, samples.images, real,
                                       generator.image_size)
    if real is not None and reference is not None:
        frechet_matched = frechet_identity_matched(quality_encoder, samples, real, reference,
                                                   generator.image_size)
    real_figures = {} if reference is None else {
        name: measure_real_reference(encoder, name, reference, generator.image_size)
        for name, encoder in recognizers.items()}
    timesteps = solver_scheduler(generator.scheduler, sampling.solver, sampling.steps).timesteps
    return Compliance(
        m_values=[float(m) for m in m_values], requested=samples.requested.tolist(),
        sampling=sampling.model_dump(), trajectory_t=[int(t) for t in timesteps],
        trajectory=samples.trajectory.round(4).tolist(), by=views(samples),
        controls=controls, frechet=frechet, real=real_figures, frechet_matched=frechet_matched)
