"""The CemiFace objective in plain torch: noise, the m grid, x0 estimates and the loss terms.

``L = L_MSE + lambda * L_SimMat``. ``L_MSE`` is the usual denoising loss (epsilon or, as an
option, v prediction; min-SNR weighting optional). ``L_SimMat`` compares the identity of the
one-step estimate ``x0_hat`` (clipped to [-1, 1]) with the training image, which is its own
inquiry: with ``s = cos(E_id(x), E_id(x0_hat))`` and ``gamma = t / T``,

    L_SimMat = (1 - gamma) (1 - s)^2 + gamma (m - s)^2

so at small t (x0_hat is nearly x) the sample must keep the identity, and at large t it must
land at the requested similarity m. The ``constant`` target schedule sets gamma = 1 at every t
(target m throughout); ``ramp`` keeps CemiFace's gamma but drops the identity term,
``gamma (m - s)^2``, so the low-noise steps have no similarity target at all. A DDIM trajectory follows the per-noise-level optimum closely, and under
CemiFace's gamma that optimum climbs back to 1 in the late steps, which pulls a sample laid out at
similarity m back towards its inquiry (measured on the face world, see docs/generator.md). m comes from a grid (CemiFace: step 0.04 over [-1, 1]); a
continuous m is known to collapse the model to one image for every m.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler

from factory.config import DiffusionConfig, SimilarityMatchingConfig
from factory.config.generator import TargetSchedule


def training_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    """The DDPM schedule of the paper: T = 1000, linear betas 1e-4 .. 0.02 (from ``cfg``)."""
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule="linear",
        prediction_type=cfg.prediction_type,
        clip_sample=True,
    )


def m_grid(cfg: SimilarityMatchingConfig) -> torch.Tensor:
    """The similarity targets training draws from: ``m_low, m_low + interval, .., m_high``."""
    count = int(round((cfg.m_high - cfg.m_low) / cfg.m_interval)) + 1
    grid = cfg.m_low + cfg.m_interval * torch.arange(count, dtype=torch.float64)
    return grid.clamp(max=cfg.m_high).float()


def draw_m(grid: torch.Tensor, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One grid value per sample, uniformly."""
    return grid[torch.randint(len(grid), (batch,), generator=generator)]


def _per_sample(values: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device)[timesteps].float().reshape(-1, *([1] * (like.ndim - 1)))


def estimate_x0(scheduler: DDPMScheduler, noisy: torch.Tensor, timesteps: torch.Tensor,
                output: torch.Tensor) -> torch.Tensor:
    """``x0_hat`` from the model output at ``t``, clipped to [-1, 1]."""
    alpha_bar = _per_sample(scheduler.alphas_cumprod, timesteps, noisy)
    if scheduler.config.prediction_type == "v_prediction":
        x0 = alpha_bar.sqrt() * noisy - (1 - alpha_bar).sqrt() * output
    else:
        x0 = (noisy - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt()
    return x0.clamp(-1.0, 1.0)


def denoising_target(scheduler: DDPMScheduler, clean: torch.Tensor, noise: torch.Tensor,
                     timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet regresses: the noise, or the velocity for v prediction."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    return noise


def snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float | None,
                like: torch.Tensor) -> torch.Tensor:
    """Per-sample MSE weights: 1, or min-SNR-gamma (Hang et al. 2023) when ``gamma`` is set."""
    if gamma is None:
        return torch.ones(len(timesteps), device=like.device)
    alpha_bar = scheduler.alphas_cumprod.to(like.device)[timesteps].float()
    snr = alpha_bar / (1 - alpha_bar)
    clipped = snr.clamp(max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr


def similarity_matching(similarity: torch.Tensor, m: torch.Tensor, timesteps: torch.Tensor,
                        num_train_timesteps: int,
                        target_schedule: TargetSchedule = "linear",
                        ramp_full_at: float = 1.0) -> torch.Tensor:
    """Per-sample ``(1 - gamma)(1 - s)^2 + gamma (m - s)^2`` with gamma = t/T (``linear``,
    CemiFace) or 1 (``constant``); ``ramp`` is ``gamma (m - s)^2`` with
    gamma = min(1, (t/T) / ramp_full_at)."""
    if target_schedule == "constant":
        gamma = torch.ones_like(similarity)
    else:
        gamma = timesteps.float() / num_train_timesteps
    if target_schedule == "ramp":
        gamma = (gamma / ramp_full_at).clamp(max=1.0)
    matching = gamma * (m - similarity) ** 2
    if target_schedule == "ramp":
        return matching
    return (1 - gamma) * (1 - similarity) ** 2 + matching


@dataclass
class LossTerms:
    """The objective and its parts (per-batch means), each logged separately."""

    total: torch.Tensor
    mse: torch.Tensor
    simmat: torch.Tensor
    similarity: torch.Tensor  # mean s = cos(E_id(x), E_id(x0_hat)), a diagnostic


def draw_unconditional(probability: float, batch: int,
                       generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Which samples train without their condition (classifier-free guidance's dropout); None
    when ``probability`` is 0, so a run without dropout draws nothing extra from its stream."""
    if probability <= 0:
        return None
    return torch.rand(batch, generator=generator) < probability


def cemiface_loss(generator, encoder, scheduler: DDPMScheduler, clean: torch.Tensor,
                  identity: torch.Tensor, m: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.Tensor, weight: float,
                  min_snr_gamma: float | None = None,
                  target_schedule: TargetSchedule = "linear",
                  unconditional: torch.Tensor | None = None,
                  ramp_full_at: float = 1.0) -> LossTerms:
    """One batch of the CemiFace objective.

    ``clean`` are training images in [-1, 1] (each its own inquiry), ``identity`` their frozen
    embeddings ``E_id(clean)``, ``m`` the drawn similarity targets. Rows marked in
    ``unconditional`` see the null context: they train the denoising loss only, since a
    similarity target means nothing to a sample that was not told its identity or m.
    """
    noisy = scheduler.add_noise(clean, noise, timesteps)
    output = generator(noisy, timesteps, identity, m, unconditional)
    target = denoising_target(scheduler, clean, noise, timesteps)
    per_sample = ((output.float() - target.float()) ** 2).mean(dim=(1, 2, 3))
    mse = (snr_weights(scheduler, timesteps, min_snr_gamma, clean) * per_sample).mean()
    estimate = estimate_x0(scheduler, noisy.float(), timesteps, output.float())
    if weight == 0:  # lambda = 0 (the ablation): s is only a diagnostic, no gradient through E_id
        with torch.no_grad():
            similarity = (encoder(estimate) * identity.float()).sum(dim=-1)
    else:
        similarity = (encoder(estimate) * identity.float()).sum(dim=-1)
    per_sample_simmat = similarity_matching(similarity, m, timesteps,
                                            scheduler.config.num_train_timesteps,
                                            target_schedule, ramp_full_at)
    if unconditional is not None:  # only conditioned samples have a similarity target
        kept = ~unconditional.to(similarity.device)
        per_sample_simmat = per_sample_simmat[kept]
        similarity = similarity[kept]
    if len(similarity) == 0:  # every sample dropped its condition
        simmat = mean_similarity = per_sample_simmat.sum()
    else:
        simmat, mean_similarity = per_sample_simmat.mean(), similarity.mean()
    return LossTerms(mse + weight * simmat, mse.detach(), simmat.detach(),
                     mean_similarity.detach())
