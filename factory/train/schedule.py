"""Learning-rate multipliers per optimizer step: linear warm-up, then step or polynomial decay."""

from __future__ import annotations

from collections.abc import Callable

from factory.config import OptimizerConfig


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
