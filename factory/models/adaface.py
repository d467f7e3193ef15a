"""AdaFace's IR backbones (github mk-minchul/AdaFace ``net.py``), so its released checkpoints
serve as E_id, judge or evaluation backbone beside arcface_torch's ``model.pt``.

The paper's E_id is AdaFace IR-50 (``adaface_ir50_ms1mv2.ckpt``; IR-101 for the larger sets).
Those files differ from arcface_torch's in three ways this module absorbs:

* **Layout.** ``input_layer`` (conv 3x3, BN, PReLU), ``body`` (a flat sequence of residual
  units, each a ``shortcut_layer`` and a ``res_layer``) and ``output_layer`` (BN, dropout,
  flatten, linear, BatchNorm1d without affine parameters). The module names here are AdaFace's,
  so its weights load with ``strict=True`` once the Lightning wrapping is removed.
* **Wrapping.** A release is a PyTorch Lightning checkpoint: the weights sit under
  ``state_dict`` with a ``model.`` prefix, next to the margin head's ``head.*`` (dropped here).
* **Input.** AdaFace was trained on BGR images normalised as ``(x / 255 - 0.5) / 0.5``. The
  project's images are RGB in [-1, 1] with the same normalisation, so :meth:`AdaFaceIR.forward`
  only reverses the channel axis; callers feed it exactly what they feed an arcface IResNet.

Like :class:`factory.models.iresnet.IResNet`, the module returns the raw embedding (AdaFace's
own forward divides it by its norm and returns the norm too); callers normalise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from factory.errors import FormatError

INPUT_SIZE = 112  # the released models are 112 x 112; output_layer's linear is sized for 7 x 7
EMBEDDING_SIZE = 512
WIDTHS = (64, 128, 256, 512)
UNITS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
"""AdaFace ``num_layers`` -> residual units per stage (IR-101 is ``num_layers=100``)."""
FAMILY = "adaface"
LIGHTNING_PREFIX = "model."
MARKER_KEY = "input_layer.0.weight"


class AdaFaceUnit(nn.Module):
    """AdaFace's ``BasicBlockIR``: BN, conv 3x3, BN, PReLU, conv 3x3 (strided), BN, plus a
    shortcut that is a strided identity (``MaxPool2d(1, stride)``) when the width is kept and
    a strided 1x1 projection with BN when it changes."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        if in_channels == channels:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class AdaFaceIR(nn.Module):
    """AdaFace IR-``num_layers`` mapping ``[B, 3, 112, 112]`` RGB in [-1, 1] to raw
    ``[B, 512]`` embeddings (the channels are reversed to AdaFace's BGR inside).

    ``self.config`` holds the constructor arguments plus ``family``, ``input_size`` and
    ``embedding_size``, the fields the rest of the project reads from any backbone, so a
    generator checkpoint that stores this E_id can rebuild it (:func:`backbone_from_args`).
    """

    def __init__(self, num_layers: int = 50) -> None:
        super().__init__()
        if num_layers not in UNITS:
            raise ValueError(f"AdaFace IR depth must be one of {sorted(UNITS)}, got {num_layers}")
        self.config: dict[str, Any] = {"family": FAMILY, "num_layers": num_layers,
                                       "input_size": INPUT_SIZE, "embedding_size": EMBEDDING_SIZE}
        self.input_layer = nn.Sequential(nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(WIDTHS[0]), nn.PReLU(WIDTHS[0]))
        units: list[nn.Module] = []
        in_channels = WIDTHS[0]
        for channels, count in zip(WIDTHS, UNITS[num_layers]):
            units.append(AdaFaceUnit(in_channels, channels, 2))
            units += [AdaFaceUnit(channels, channels, 1) for _ in range(count - 1)]
            in_channels = channels
        self.body = nn.Sequential(*units)
        side = INPUT_SIZE // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(WIDTHS[-1]), nn.Dropout(0.4), nn.Flatten(),
            nn.Linear(WIDTHS[-1] * side * side, EMBEDDING_SIZE),
            nn.BatchNorm1d(EMBEDDING_SIZE, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(x.flip(1))))


def is_adaface(weights: Any) -> bool:
    """Whether a loaded file is an AdaFace release (Lightning checkpoint) or its bare state_dict.

    The test is by key names, which do not overlap with arcface_torch's (``conv1``, ``layer1``
    .. ``layer4``, ``fc``, ``features``), so no config field is needed to say which it is.
    """
    if not isinstance(weights, Mapping):
        return False
    inner = weights.get("state_dict")
    if isinstance(inner, Mapping):
        return LIGHTNING_PREFIX + MARKER_KEY in inner
    return MARKER_KEY in weights


def adaface_weights(weights: Mapping[str, Any]) -> dict[str, Any]:
    """The backbone's own state_dict from an AdaFace file: Lightning's ``state_dict`` with the
    ``model.`` prefix removed and the margin head dropped; a bare state_dict as it is."""
    inner = weights.get("state_dict")
    if not isinstance(inner, Mapping):
        return dict(weights)
    return {key[len(LIGHTNING_PREFIX):]: value for key, value in inner.items()
            if key.startswith(LIGHTNING_PREFIX)}


def adaface_depth(state: Mapping[str, Any], uri: str) -> int:
    """AdaFace ``num_layers`` of a state_dict, from how many residual units its body has."""
    indices = {int(key.split(".")[1]) for key in state if key.startswith("body.")}
    depth = {sum(units): layers for layers, units in UNITS.items()}.get(len(indices))
    if depth is None:
        raise FormatError(f"{uri}: AdaFace weights with {len(indices)} residual units; expected "
                          f"IR-18/34/50/101 ({', '.join(str(sum(u)) for u in UNITS.values())} "
                          "units)")
    return depth
