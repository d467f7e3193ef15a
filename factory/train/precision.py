"""Mixed precision for the training loops: autocast on GPU, plain float32 elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch


def autocast_and_scaler(
    device: torch.device, enabled: bool
) -> tuple[Callable[[], AbstractContextManager], torch.amp.GradScaler]:
    """bf16 autocast where the GPU supports it, else fp16 with a grad scaler; off on CPU."""
    use = enabled and device.type == "cuda"
    dtype = torch.bfloat16 if use and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use and dtype == torch.float16)
    return (lambda: torch.autocast(device.type, dtype=dtype, enabled=use)), scaler
