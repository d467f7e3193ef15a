"""The frozen identity encoder E_id the generator is conditioned on and judged by.

It wraps a recognizer backbone (a face-world checkpoint or a user's arcface_torch weights) so
that it takes images in the generator's space, ``[B, 3, H, W]`` in [-1, 1] (the normalisation
the backbones were trained with), resizes them to the backbone's input size when the two
differ, and returns unit-length embeddings. Its weights never train, but gradients flow through
it to the images, which is what the similarity-matching loss needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from factory.models.iresnet import preprocess

if TYPE_CHECKING:
    from factory.formats.dataset import FaceDataset


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


def inquiry_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1] at ``size`` (the generator's image size)."""
    batch = preprocess(images)
    if batch.shape[-1] != size:
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
    return batch


@torch.no_grad()
def encode_images(encoder: nn.Module, image_size: int, images: np.ndarray,
                  batch_size: int = 256) -> np.ndarray:
    """Unit-length embeddings of uint8 NHWC ``images``, brought to ``image_size`` first (as
    inquiries are): E_id's or the judge's view of any image set, e.g. validation benchmarks."""
    rows = [encoder(inquiry_tensor(images[start:start + batch_size], image_size)).numpy()
            for start in range(0, len(images), batch_size)]
    return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)


@torch.no_grad()
def embedding_batches(encoder: nn.Module, image_size: int, dataset: FaceDataset,
                      indices: Sequence[int], batch_size: int = 256
                      ) -> Iterator[tuple[Sequence[int], torch.Tensor]]:
    """E_id embeddings of ``dataset`` images ``indices``, a batch at a time: ``(indices of the
    batch, [B, D] unit-length embeddings)``, the images first brought to ``image_size``."""
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        images = np.stack([dataset.image(int(i)) for i in chunk])
        yield chunk, encoder(inquiry_tensor(images, image_size))


@torch.no_grad()
def real_centers(encoder: torch.nn.Module, image_size: int, data: FaceDataset,
                 batch_size: int = 256) -> np.ndarray:
    """Unit-length mean embedding of each identity of ``data`` by ``encoder`` (rows in label order)."""
    sums = torch.zeros(data.num_classes, 0)
    for indices, embeddings in embedding_batches(encoder, image_size, data, range(len(data)),
                                                 batch_size):
        if sums.shape[1] == 0:
            sums = torch.zeros(data.num_classes, embeddings.shape[1])
        sums.index_add_(0, torch.as_tensor(data.labels[list(indices)]), embeddings)
    return torch.nn.functional.normalize(sums, dim=-1).numpy()
