"""DDIM sampling from the generator, every sample seeded on its own.

A sample is fully determined by (identity embedding, m, seed, steps, eta): its starting noise
and, for ``eta > 0``, every step's fresh noise come from a CPU generator seeded with the
sample's own seed, so a sample regenerates identically whatever batch it lands in and on
whatever device the model runs.
"""

from __future__ import annotations

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
                eta: float = 0.0) -> torch.Tensor:
    """Images ``[B, 3, S, S]`` in [-1, 1] for each (identity, m, seed) row."""
    if not len(identity) == len(m) == len(seeds):
        raise ValueError("identity, m and seeds need one row per sample")
    device = identity.device
    scheduler = ddim_scheduler(training, steps)
    shape = (3, image_size, image_size)
    sample = seeded_noise(seeds, shape).to(device)
    for index, t in enumerate(scheduler.timesteps):
        timesteps = torch.full((len(seeds),), int(t), device=device, dtype=torch.long)
        output = generator(sample, timesteps, identity, m).float()
        variance_noise = seeded_noise(seeds, shape, index + 1).to(device) if eta > 0 else None
        sample = scheduler.step(output, t, sample, eta=eta,
                                variance_noise=variance_noise).prev_sample
    return sample.clamp(-1.0, 1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in [-1, 1] -> ``[B, H, W, 3]`` uint8 RGB (the dataset convention)."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
