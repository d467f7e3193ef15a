"""DDIM sampling from the generator, every sample seeded on its own.

A sample is fully determined by (identity embedding, m, seed, steps, eta, handoff): its
starting noise and, for ``eta > 0``, every step's fresh noise come from a CPU generator seeded
with the sample's own seed, so a sample regenerates identically whatever batch it lands in and
on whatever device the model runs.

Identity hand-off (optional, off by default). The CemiFace objective asks the one-step
estimate at noise level ``gamma = t / T`` for a similarity of ``(1 - gamma) + gamma * m`` to
the inquiry: near 1 at small t whatever m is. Along a DDIM trajectory the model does just
that, so the late steps pull a sample that was laid out at similarity m back towards the
inquiry until the image stops changing. With ``handoff = h`` the sampler stops conditioning on
the inquiry once ``t / T`` falls below h: it embeds its current estimate of the clean image
once and, for the remaining steps, conditions on that embedding at m = 1, the training
situation of an image denoised towards its own identity. The layout chosen under (inquiry, m)
is kept and only refined.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from factory.models.generator import CemiFaceGenerator


def ddim_scheduler(training: DDPMScheduler, steps: int) -> DDIMScheduler:
    """A DDIM sampler over the training schedule, with ``steps`` denoising steps."""
    scheduler = DDIMScheduler.from_config(training.config, clip_sample=True,
                                          set_alpha_to_one=False)
    scheduler.set_timesteps(steps)
    return scheduler


def seeded_noise(seeds: list[int], shape: tuple[int, ...], step: int = 0) -> torch.Tensor:
    """``[len(seeds), *shape]`` standard normal noise; row i depends only on (seeds[i], step)."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1009 + step))
            for seed in seeds]
    return torch.stack(rows)


@torch.no_grad()
def ddim_sample(generator: CemiFaceGenerator, training: DDPMScheduler, identity: torch.Tensor,
                m: torch.Tensor, seeds: list[int], image_size: int, steps: int = 20,
                eta: float = 0.0, handoff: float | None = None,
                encoder: torch.nn.Module | None = None,
                on_step: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Images ``[B, 3, S, S]`` in [-1, 1] for each (identity, m, seed) row.

    ``handoff`` (a fraction of T, see the module docstring) needs ``encoder``, the identity
    encoder the generator is conditioned on. ``on_step(t, x0_estimate)``, if given, sees every
    step's estimate of the clean image, clipped to [-1, 1] (the trajectory diagnostic of
    ``factory generator-report``).
    """
    if not len(identity) == len(m) == len(seeds):
        raise ValueError("identity, m and seeds need one row per sample")
    if handoff is not None and encoder is None:
        raise ValueError("an identity hand-off needs the identity encoder")
    device = identity.device
    scheduler = ddim_scheduler(training, steps)
    handoff_after = _handoff_index(scheduler, training, handoff)
    shape = (3, image_size, image_size)
    sample = seeded_noise(seeds, shape).to(device)
    for index, t in enumerate(scheduler.timesteps):
        timesteps = torch.full((len(seeds),), int(t), device=device, dtype=torch.long)
        output = generator(sample, timesteps, identity, m).float()
        variance_noise = seeded_noise(seeds, shape, index + 1).to(device) if eta > 0 else None
        step = scheduler.step(output, t, sample, eta=eta, variance_noise=variance_noise)
        sample = step.prev_sample
        estimate = step.pred_original_sample.clamp(-1.0, 1.0)
        if on_step is not None:
            on_step(int(t), estimate)
        if index == handoff_after:  # the estimate of the clean image becomes the identity
            identity = encoder(estimate)
            m = torch.ones_like(m)
    return sample.clamp(-1.0, 1.0)


def _handoff_index(scheduler: DDIMScheduler, training: DDPMScheduler,
                   handoff: float | None) -> int | None:
    """The step after which the sampler hands off: the last one at or above ``handoff * T``
    (the first when every step is below it); None without a hand-off or when that is the final
    step, after which nothing is left to condition."""
    if handoff is None:
        return None
    threshold = handoff * training.config.num_train_timesteps
    at_or_above = [i for i, t in enumerate(scheduler.timesteps) if int(t) >= threshold]
    index = at_or_above[-1] if at_or_above else 0
    return index if index + 1 < len(scheduler.timesteps) else None


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [-1, 1] -> ``[B, H, W, 3]`` uint8 RGB (the dataset convention)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
