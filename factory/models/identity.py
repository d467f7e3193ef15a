"""The frozen identity encoder E_id the generator is conditioned on and judged by.

It wraps a recognizer backbone (a face-world checkpoint or a user's arcface_torch weights) so
that it takes images in the generator's space, ``[B, 3, H, W]`` in [-1, 1] (the normalisation
the backbones were trained with), resizes them to the backbone's input size when the two
differ, and returns unit-length embeddings. Its weights never train, but gradients flow through
it to the images, which is what the similarity-matching loss needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class IdentityEncoder(nn.Module):
    """``images in [-1, 1] -> L2-normalised embeddings``, weights frozen, always in eval mode."""

    def __init__(self, backbone: nn.Module, input_size: int) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.input_size = input_size
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> IdentityEncoder:
        """Stays in eval mode (BatchNorm statistics and dropout of E_id must not change)."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size),
                                   mode="bilinear", align_corners=False, antialias=True)
        return F.normalize(self.backbone(images).float(), dim=-1)
