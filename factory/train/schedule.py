"""Schedules per optimizer step: learning-rate multipliers (linear warm-up, then step,
polynomial or cosine decay) and the generator's EMA weights."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from factory.config import GeneratorOptimizerConfig, OptimizerConfig


def lr_multiplier(cfg: OptimizerConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """A ``LambdaLR`` function of the global step.

    Warm-up rises linearly over ``warmup_epochs``; ``step`` multiplies by ``gamma`` at each
    milestone epoch (arcface_torch and the CemiFace protocol: 0.1 at epochs 26 and 34 of 40);
    ``poly`` decays as ``(1 - progress) ** poly_power`` over all epochs.
    """
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)
    total_steps = max(1, cfg.epochs * steps_per_epoch)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if cfg.schedule == "poly":
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return max(0.0, 1.0 - progress) ** cfg.poly_power
        epoch = step // steps_per_epoch
        return cfg.gamma ** sum(epoch >= milestone for milestone in cfg.milestones)

    return multiplier


def warmup_cosine_multiplier(warmup_steps: int, total_steps: int,
                             min_ratio: float) -> Callable[[int], float]:
    """A ``LambdaLR`` function: linear warm-up, then cosine decay to ``min_ratio`` of the peak
    (the usual diffusion-training schedule)."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def ema_weights(parameters: Iterable[Any], cfg: GeneratorOptimizerConfig) -> Any:
    """diffusers' ``EMAModel`` over ``parameters`` with the config's decay. With
    ``ema_warmup`` (diffusers' default) the decay ramps as ``(1 + n) / (10 + n)`` up to
    ``ema_decay``; without it ``min_decay`` pins it at ``ema_decay`` from the first update (the
    first copies the weights, as EMAModel always does)."""
    from diffusers.training_utils import EMAModel

    return EMAModel(parameters, decay=cfg.ema_decay,
                    min_decay=0.0 if cfg.ema_warmup else cfg.ema_decay)
