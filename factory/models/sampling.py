"""Sampling from the generator with a diffusers solver, every sample seeded on its own.

Solvers (``synthesis.sampling.solver``): DDIM (the reference), DPM-Solver++ 2M and UniPC (2nd
order, data prediction). All are built from the training schedule's config, so they read the
model output as what training regressed (epsilon or v); the multistep solvers threshold their x0
estimate at 1 (a plain clip to [-1, 1], as DDIM's ``clip_sample``), which keeps them on the
image range the model was trained on. Only DDIM takes ``eta > 0``.

Classifier-free guidance (``guidance_scale`` w, off at 1): each step runs the model twice, with
the sample's condition and with the null context a generator trained with condition dropout
holds, and the solver sees ``eps_null + w (eps_cond - eps_null)``: w > 1 moves a sample further
along what its (identity, m) condition changes, which is how Arc2Face- and VIGFace-style
generators make samples keep their identity. ``guidance_interval`` limits it to the steps whose
t/T lies in [low, high) (Kynkaanniemi et al. 2024 limit guidance to an interval of noise
levels); the other steps take the conditional pass alone, so guidance over half the steps costs
half as much.

A sample is fully determined by (identity embedding, m, seed, solver, steps, eta, handoff,
guidance scale): its
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

import contextlib
from collections.abc import Callable
from typing import Literal

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from factory.models.diffusion import estimate_x0
from factory.models.generator import CemiFaceGenerator

Solver = Literal["ddim", "dpmsolver++", "unipc"]
SOLVER_NAMES = {"ddim": "DDIM", "dpmsolver++": "DPM-Solver++ 2M", "unipc": "UniPC"}


def solver_scheduler(training: DDPMScheduler, solver: Solver, steps: int) -> SchedulerMixin:
    """A fresh solver over the training schedule with ``steps`` denoising steps (multistep
    solvers keep a history, so every batch needs its own)."""
    if solver == "ddim":
        scheduler = DDIMScheduler.from_config(training.config, clip_sample=True,
                                              set_alpha_to_one=False)
    elif solver == "dpmsolver++":
        scheduler = DPMSolverMultistepScheduler.from_config(
            training.config, algorithm_type="dpmsolver++", solver_order=2, thresholding=True,
            sample_max_value=1.0)
    elif solver == "unipc":
        scheduler = UniPCMultistepScheduler.from_config(
            training.config, predict_x0=True, solver_order=2, thresholding=True,
            sample_max_value=1.0)
    else:
        raise ValueError(f"unknown solver {solver!r}; expected one of {', '.join(SOLVER_NAMES)}")
    scheduler.set_timesteps(steps)
    return scheduler


def seeded_noise(seeds: list[int], shape: tuple[int, ...], step: int = 0) -> torch.Tensor:
    """``[len(seeds), *shape]`` standard normal noise; row i depends only on (seeds[i], step)."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1009 + step))
            for seed in seeds]
    return torch.stack(rows)


def autocast_context(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device`` (None: full precision, no autocast)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
def sample_images(generator: CemiFaceGenerator, training: DDPMScheduler,
                  identity: torch.Tensor, m: torch.Tensor, seeds: list[int], image_size: int,
                  steps: int = 20, eta: float = 0.0, handoff: float | None = None,
                  encoder: torch.nn.Module | None = None,
                  on_step: Callable[[int, torch.Tensor], None] | None = None,
                  solver: Solver = "ddim", autocast: torch.dtype | None = None,
                  channels_last: bool = False, guidance_scale: float = 1.0,
                  guidance_interval: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Images ``[B, 3, S, S]`` in [-1, 1] for each (identity, m, seed) row.

    ``handoff`` (a fraction of T, see the module docstring) needs ``encoder``, the identity
    encoder the generator is conditioned on. ``on_step(t, x0_estimate)``, if given, sees every
    step's estimate of the clean image, clipped to [-1, 1] (the trajectory diagnostic of
    ``factory generator-report``). ``autocast`` runs the model (and the hand-off's encoder) in
    that dtype; the solver's state stays float32. ``channels_last`` feeds the UNet NHWC
    inputs (its weights should be converted once, :mod:`factory.models.inference`).
    ``guidance_scale`` != 1 applies classifier-free guidance (the generator must be
    ``guidable``) at the steps whose t/T lies in ``guidance_interval``; both predictions come
    from one batched model call.
    """
    if not len(identity) == len(m) == len(seeds):
        raise ValueError("identity, m and seeds need one row per sample")
    if handoff is not None and encoder is None:
        raise ValueError("an identity hand-off needs the identity encoder")
    if eta > 0 and solver != "ddim":
        raise ValueError(f"eta > 0 needs the ddim solver ({solver} is deterministic)")
    if guidance_scale != 1.0 and not generator.guidable:
        raise ValueError(f"guidance_scale {guidance_scale:g} needs a generator trained with "
                         "generator.condition.dropout > 0 (this one has no null context)")
    device = identity.device
    scheduler = solver_scheduler(training, solver, steps)
    handoff_after = _handoff_index(scheduler, training, handoff)
    (low, high), total = guidance_interval, training.config.num_train_timesteps
    shape = (3, image_size, image_size)
    sample = seeded_noise(seeds, shape).to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for index, t in enumerate(scheduler.timesteps):
        timesteps = torch.full((len(seeds),), int(t), device=device, dtype=torch.long)
        scale = guidance_scale if low * total <= int(t) < high * total else 1.0
        with autocast_context(device, autocast):
            output = guided_output(generator, sample.to(memory_format=layout), timesteps,
                                   identity, m, scale)
        output = output.float().contiguous()
        if solver == "ddim":
            variance_noise = seeded_noise(seeds, shape, index + 1).to(device) if eta > 0 else None
            step = scheduler.step(output, t, sample, eta=eta, variance_noise=variance_noise)
            estimate = step.pred_original_sample.clamp(-1.0, 1.0)
        else:
            estimate = estimate_x0(training, sample, timesteps, output) \
                if on_step is not None or index == handoff_after else None
            step = scheduler.step(output, t, sample)
        sample = step.prev_sample
        if on_step is not None:
            on_step(int(t), estimate)
        if index == handoff_after:  # the estimate of the clean image becomes the identity
            with autocast_context(device, autocast):
                identity = encoder(estimate).float()
            m = torch.ones_like(m)
    return sample.clamp(-1.0, 1.0)


def guidance_options(sampling) -> dict:
    """The guidance keyword arguments of :func:`sample_images` from a ``SamplingConfig``."""
    return {"guidance_scale": sampling.guidance_scale,
            "guidance_interval": tuple(sampling.guidance_interval)}


def guided_output(generator: CemiFaceGenerator, sample: torch.Tensor, timesteps: torch.Tensor,
                  identity: torch.Tensor, m: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """The model output the solver steps with: the conditional prediction, or at
    ``guidance_scale`` != 1 ``null + w (cond - null)`` from one call on a doubled batch."""
    if guidance_scale == 1.0:
        return generator(sample, timesteps, identity, m)
    count = len(sample)
    unconditional = torch.arange(2 * count, device=sample.device) >= count
    both = generator(torch.cat([sample, sample]), torch.cat([timesteps, timesteps]),
                     torch.cat([identity, identity]), torch.cat([m, m]), unconditional)
    conditional, null = both.float().chunk(2)
    return null + guidance_scale * (conditional - null)


def _handoff_index(scheduler: SchedulerMixin, training: DDPMScheduler,
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
