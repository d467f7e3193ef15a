"""The generator's EMA weights decay as the config says, with and without diffusers' ramp."""

from __future__ import annotations

import math

import pytest
import torch

from factory.config import GeneratorOptimizerConfig
from factory.train.schedule import ema_weights


def _share_of_the_start(updates: int, **optimizer) -> float:
    """What is left of the starting weights in the EMA after ``updates`` updates: the parameter
    sits at 1 for the first update (which copies it, as EMAModel always does), then at 0."""
    parameter = torch.nn.Parameter(torch.ones(1))
    ema = ema_weights([parameter], GeneratorOptimizerConfig(**optimizer))
    ema.step([parameter])
    with torch.no_grad():
        parameter.zero_()
    for _ in range(updates):
        ema.step([parameter])
    return float(ema.shadow_params[0])


def test_with_the_warmup_the_decay_ramps_and_ignores_a_higher_setting():
    ramp = math.prod((1 + n) / (10 + n) for n in range(1, 201))
    assert _share_of_the_start(200, ema_decay=0.999) == pytest.approx(ramp, rel=1e-4)
    # 0.999 and 0.9999 are the same average until step 8991
    assert _share_of_the_start(200, ema_decay=0.9999) == pytest.approx(ramp, rel=1e-4)


def test_without_the_warmup_the_decay_holds_from_the_first_update():
    assert _share_of_the_start(100, ema_decay=0.99, ema_warmup=False) == pytest.approx(
        0.99 ** 100, rel=1e-4)
