"""The IResNet face-recognition backbone, in arcface_torch's exact module layout.

Module names, shapes and ordering follow insightface ``recognition/arcface_torch`` so that an
arcface_torch ``model.pt`` (a plain state_dict) loads with ``strict=True`` and a facefactory
``backbone.pt`` loads into insightface tooling unchanged:

* stem: ``conv1`` 3x3 stride 1 -> ``bn1`` -> ``prelu`` (no max-pool: faces are only 112 px);
* four stages ``layer1`` .. ``layer4`` of :class:`IBasicBlock`, each stage halving the side;
* head: ``bn2`` -> flatten -> ``dropout`` -> ``fc`` -> ``features`` (BatchNorm1d whose weight
  is fixed at 1, so only its bias and running statistics are learned).

The backbone returns the raw, unnormalised embedding; margins and the loss live in
:mod:`factory.models.heads`. Besides the published depths (``r18`` .. ``r200``) there are two
narrow members of the same family (``ir-tiny``, ``ir-small``) that train on a laptop CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from factory.errors import ConfigError

BN_EPS = 1e-5
NUM_STAGES = 4
# Each stage halves the side (stride 2), so the head sees input_size / 16.
DOWNSAMPLING = 2**NUM_STAGES
STANDARD_WIDTHS = (64, 128, 256, 512)

BACKBONE_PRESETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "r18": ((2, 2, 2, 2), STANDARD_WIDTHS),
    "r34": ((3, 4, 6, 3), STANDARD_WIDTHS),
    "r50": ((3, 4, 14, 3), STANDARD_WIDTHS),
    "r100": ((3, 13, 30, 3), STANDARD_WIDTHS),
    "r200": ((6, 26, 60, 6), STANDARD_WIDTHS),
    "ir-tiny": ((1, 1, 1, 1), (16, 32, 64, 128)),
    "ir-small": ((2, 2, 2, 2), (32, 64, 128, 256)),
}
"""Backbone name -> (blocks per stage, channels per stage)."""


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: BN, conv 3x3, BN, PReLU, conv 3x3 (strided), BN.

    The stride sits on the second convolution and nothing follows the residual add; both are
    arcface_torch's choices and fix the meaning of the saved weights.
    """

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.prelu = nn.PReLU(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


def _stage(in_channels: int, channels: int, blocks: int) -> nn.Sequential:
    """One stage: a strided first block with a 1x1 projection shortcut, then plain blocks."""
    downsample = nn.Sequential(
        nn.Conv2d(in_channels, channels, 1, stride=2, bias=False),
        nn.BatchNorm2d(channels, eps=BN_EPS),
    )
    layers = [IBasicBlock(in_channels, channels, stride=2, downsample=downsample)]
    layers += [IBasicBlock(channels, channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class IResNet(nn.Module):
    """An IResNet mapping ``[B, 3, S, S]`` normalised RGB to ``[B, embedding_size]`` embeddings.

    Args:
        layers: blocks in each of the four stages (``(3, 4, 14, 3)`` is r50).
        widths: channels of each stage; the stem has ``widths[0]``.
        input_size: side ``S`` of the square input in pixels; a multiple of 16, since the four
            stages each halve it and ``fc`` is sized for the ``S / 16`` grid left at the end.
        embedding_size: dimension of the embedding.
        dropout: dropout probability before ``fc`` (arcface_torch uses 0).

    The arguments are kept in ``self.config`` so a checkpoint can rebuild the module.
    """

    def __init__(
        self,
        layers: Sequence[int],
        widths: Sequence[int] = STANDARD_WIDTHS,
        input_size: int = 112,
        embedding_size: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_arguments(layers, widths, input_size)
        self.config: dict[str, Any] = {
            "layers": list(layers),
            "widths": list(widths),
            "input_size": input_size,
            "embedding_size": embedding_size,
            "dropout": dropout,
        }
        self.conv1 = _conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0], eps=BN_EPS)
        self.prelu = nn.PReLU(widths[0])
        inputs = (widths[0], *widths[:-1])
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            _stage(c_in, c_out, blocks) for c_in, c_out, blocks in zip(inputs, widths, layers)
        )
        side = input_size // DOWNSAMPLING
        self.bn2 = nn.BatchNorm2d(widths[-1], eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(widths[-1] * side * side, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        """Kaiming-normal convolutions, BatchNorm at identity; ``features.weight`` frozen at 1.

        The frozen scale is arcface_torch's: the embedding's scale is left to the margin loss,
        which normalises it anyway, so learning it would only add a redundant degree of freedom.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def _check_arguments(layers: Sequence[int], widths: Sequence[int], input_size: int) -> None:
    """Refuse architectures the fixed four-stage layout cannot build, naming the field."""
    if input_size < DOWNSAMPLING or input_size % DOWNSAMPLING:
        raise ConfigError(
            f"backbone.input_size: must be a positive multiple of {DOWNSAMPLING}, got {input_size}"
        )
    if len(layers) != NUM_STAGES or len(widths) != NUM_STAGES:
        raise ConfigError(
            f"backbone: IResNet has {NUM_STAGES} stages, got layers={list(layers)} "
            f"widths={list(widths)}"
        )


def build_backbone(
    name: str, input_size: int = 112, embedding_size: int = 512, dropout: float = 0.0
) -> IResNet:
    """The preset IResNet called ``name`` (see :data:`BACKBONE_PRESETS`)."""
    if name not in BACKBONE_PRESETS:
        raise ConfigError(
            f"backbone.name: unknown backbone {name!r}; choose one of {', '.join(BACKBONE_PRESETS)}"
        )
    layers, widths = BACKBONE_PRESETS[name]
    return IResNet(layers, widths, input_size, embedding_size, dropout)


def preprocess(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` RGB (0-255) -> float32 ``[B, 3, H, W]`` in [-1, 1].

    The normalisation ``(x / 255 - 0.5) / 0.5`` is the one arcface_torch models were trained
    with; any other would silently degrade a loaded ``model.pt``. A tensor stays on its device.
    """
    batch = torch.as_tensor(images)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected [B, H, W, 3] RGB images, got shape {tuple(batch.shape)}")
    return (batch.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
