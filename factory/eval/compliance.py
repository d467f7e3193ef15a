"""m-compliance of a generator: does the measured similarity follow the requested m?

For held-out inquiry identities (never seen in training), every requested m and several seeds,
sample, embed with the generator's own E_id, and measure cos(E_id(inquiry), E_id(sample)).
Reported: mean and std per m, whether the means fall monotonically as m falls, the Spearman
correlation between requested m and measured similarity over all samples, and the mean
similarity between *different* inquiry identities (what "a different person" looks like to E_id).
Also the trajectory: per m, the mean similarity of each DDIM step's estimate of the clean image,
which shows where along the sampling the similarity is decided.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from factory.config import SamplingConfig
from factory.formats.dataset import FaceDataset
from factory.models.identity import inquiry_tensor
from factory.models.sampling import ddim_sample, ddim_scheduler
from factory.train.generator_checkpoint import LoadedGenerator


@dataclass
class Compliance:
    """The numbers the README and the issue ask for, plus the raw measurements."""

    m_values: list[float]
    mean: list[float]
    std: list[float]
    spearman: float
    monotonic: bool
    between_identities: float
    requested: list[float]
    measured: list[float]
    sampling: dict  # the SamplingConfig the samples were drawn with
    trajectory_t: list[int]  # the DDIM timesteps, first to last
    trajectory: list[list[float]]  # per m, per step: mean cos(E_id(inquiry), E_id(x0_hat))

    def summary(self) -> dict:
        document = asdict(self)
        del document["requested"], document["measured"]
        return document


def first_image_per_identity(dataset: FaceDataset, count: int) -> np.ndarray:
    """``[count, H, W, 3]`` uint8: the first image of each of the first ``count`` identities."""
    firsts: dict[int, int] = {}
    for index, label in enumerate(dataset.labels):
        firsts.setdefault(int(label), index)
        if len(firsts) == count:
            break
    if len(firsts) < 2:
        raise ValueError("m-compliance needs at least two inquiry identities")
    return np.stack([dataset.image(index) for index in firsts.values()])


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
def measure_compliance(generator: LoadedGenerator, inquiries: np.ndarray,
                       m_values: Sequence[float], seeds: int, sampling: SamplingConfig,
                       device: torch.device | str = "cpu") -> Compliance:
    """Sample every (inquiry, m, seed) and measure its similarity to the inquiry."""
    images = inquiry_tensor(inquiries, generator.image_size).to(device)
    identity = generator.encoder(images)
    rows = [(i, float(m), s) for i in range(len(identity)) for m in m_values for s in range(seeds)]
    requested, measured = [], []
    m_column = {float(m): column for column, m in enumerate(m_values)}
    step_sums = np.zeros((len(m_values), sampling.steps))
    for start in range(0, len(rows), sampling.batch_size):
        chunk = rows[start:start + sampling.batch_size]
        index = torch.tensor([r[0] for r in chunk], device=device)
        m = torch.tensor([r[1] for r in chunk], device=device)
        # Seeds are unique per (inquiry, seed index); the same noise serves every m of a pair,
        # so the m columns differ only by the condition.
        sample_seeds = [10_000 * r[0] + r[2] for r in chunk]
        per_step: list[torch.Tensor] = []  # [B] similarities of each step's x0 estimate
        samples = ddim_sample(generator.model, generator.scheduler, identity[index], m,
                              sample_seeds, generator.image_size, sampling.steps, sampling.eta,
                              sampling.identity_handoff, generator.encoder,
                              lambda _, estimate: per_step.append(
                                  (generator.encoder(estimate) * identity[index]).sum(-1)))
        columns = np.array([m_column[r[1]] for r in chunk])
        along = torch.stack(per_step).cpu().numpy()  # [steps, B]
        for column in np.unique(columns):
            step_sums[column] += along[:, columns == column].sum(axis=1)
        similarity = (generator.encoder(samples) * identity[index]).sum(-1)
        requested += [r[1] for r in chunk]
        measured += similarity.cpu().tolist()
    requested_arr, measured_arr = np.array(requested), np.array(measured)
    means = [float(measured_arr[requested_arr == m].mean()) for m in m_values]
    stds = [float(measured_arr[requested_arr == m].std()) for m in m_values]
    order = np.argsort(-np.asarray(m_values, float))
    ordered_means = np.asarray(means)[order]
    cross = (identity @ identity.T).cpu().numpy()
    between = float(cross[~np.eye(len(cross), dtype=bool)].mean())
    timesteps = ddim_scheduler(generator.scheduler, sampling.steps).timesteps
    return Compliance(
        m_values=[float(m) for m in m_values], mean=means, std=stds,
        spearman=spearman(requested_arr, measured_arr),
        monotonic=bool(np.all(np.diff(ordered_means) < 0)),
        between_identities=between, requested=requested, measured=measured,
        sampling=sampling.model_dump(),
        trajectory_t=[int(t) for t in timesteps],
        trajectory=(step_sums / (len(identity) * seeds)).round(4).tolist(),
    )
