"""Training samples for the recognizer: augmented images with (labels, weights) targets.

Every sample carries K targets with weights summing to 1, the form the margin classifier takes
for soft labels. Without domain mixup K = 2: a plain sample is (y, y) with weights (1, 0), a
sample of a SynFace identity-mixup identity (soft-labelled shards) is (y_i, y_j) with weights
(phi, 1 - phi). With SynFace domain mixup a real image is blended in, x = psi x_syn +
(1 - psi) x_real, and K = 3: the synthetic targets scaled by psi, then C_syn + y_real with weight
1 - psi, the real classes numbered after the synthetic ones. ``real_fraction``
mixes in only the first share of the real identities (by label), SynFace's real-data budget.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from factory.config import MIXUP_GRID, AugmentConfig
from factory.formats.dataset import FaceDataset, training_targets
from factory.train.augment import augment



class TrainingSamples(Dataset):
    """A map-style torch dataset over any :class:`FaceDataset`, deterministic per epoch."""

    def __init__(
        self,
        primary: FaceDataset,
        input_size: int,
        augment_config: AugmentConfig,
        seed: int,
        real: FaceDataset | None = None,
        psi: float | str = "grid",
        real_fraction: float = 1.0,
    ) -> None:
        self.primary = primary
        self.real = real
        self.real_classes = max(1, math.ceil(real_fraction * real.num_classes)) if real else 0
        self.real_indices = np.flatnonzero(real.labels < self.real_classes) if real else None
        self.input_size = input_size
        self.augment_config = augment_config
        self.seed = seed
        self.psi = psi
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        """Classes of the shared classifier: the primary ones, then the real ones if mixed."""
        return self.primary.num_classes + self.real_classes

    def set_epoch(self, epoch: int) -> None:
        """Draw new augmentations for a new epoch (DataLoader workers copy this each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.primary)

    def _view(self, dataset: FaceDataset, index: int, rng: np.random.Generator) -> np.ndarray:
        return augment(dataset.image(index), self.input_size, self.augment_config, rng)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image = self._view(self.primary, index, rng)
        labels, weights = training_targets(self.primary, index)
        if self.real is not None:
            psi = float(rng.choice(MIXUP_GRID)) if self.psi == "grid" else float(self.psi)
            real_index = int(self.real_indices[rng.integers(len(self.real_indices))])
            image = psi * image + (1.0 - psi) * self._view(self.real, real_index, rng)
            real_label = self.primary.num_classes + int(self.real.labels[real_index])
            labels = (*labels, real_label)
            weights = (psi * weights[0], psi * weights[1], 1.0 - psi)
        return (
            torch.from_numpy(image),
            torch.tensor(labels, dtype=torch.long),
            torch.tensor(weights, dtype=torch.float32),
        )


class DiffusionImages(Dataset):
    """Generator training images: ``[3, S, S]`` float in [-1, 1], randomly mirrored.

    Only the image is used (each image is its own inquiry); labels are not needed. Resizing uses
    area interpolation, the right filter for shrinking.
    """

    def __init__(self, dataset: FaceDataset, image_size: int, seed: int) -> None:
        self.dataset = dataset
        self.image_size = image_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.dataset.image(index)
        if image.shape[0] != self.image_size or image.shape[1] != self.image_size:
            image = cv2.resize(image, (self.image_size, self.image_size),
                               interpolation=cv2.INTER_AREA)
        if np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5:
            image = image[:, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        return tensor / 127.5 - 1.0
