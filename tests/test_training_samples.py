"""The recognizer's training samples: plain targets, SynFace domain mixup and its real budget."""

from __future__ import annotations

import numpy as np
import pytest

from factory.config import MIXUP_GRID, AugmentConfig
from factory.train.augment import to_network_input
from factory.train.samples import TrainingSamples

NO_AUGMENT = AugmentConfig(crop_scale=(1.0, 1.0), erase_probability=0.0, flip=False,
                           color_jitter=0.0)


class SolidFaces:
    """A FaceDataset of 16x16 images, each one flat grey level, so a mix is easy to predict."""

    def __init__(self, levels: list[int], labels: list[int]) -> None:
        self.levels = levels
        self.labels = np.array(labels, dtype=np.int64)
        self.num_classes = int(self.labels.max()) + 1

    def __len__(self) -> int:
        return len(self.levels)

    def image(self, index: int) -> np.ndarray:
        return np.full((16, 16, 3), self.levels[index], dtype=np.uint8)


def _input(level: int) -> float:
    return float(to_network_input(np.full((16, 16, 3), level, np.uint8))[0, 0, 0])


def test_a_plain_sample_has_one_target():
    samples = TrainingSamples(SolidFaces([10, 20], [0, 1]), 16, NO_AUGMENT, seed=0)
    image, labels, weights = samples[1]
    assert samples.num_classes == 2
    assert labels.tolist() == [1, 1] and weights.tolist() == [1.0, 0.0]
    assert image[0, 0, 0].item() == pytest.approx(_input(20))


def test_domain_mixup_blends_image_and_targets_with_psi():
    synthetic = SolidFaces([0, 0, 0], [0, 1, 2])
    real = SolidFaces([200, 200, 200, 200], [0, 1, 2, 3])
    samples = TrainingSamples(synthetic, 16, NO_AUGMENT, seed=0, real=real, psi=0.25)
    assert samples.num_classes == 3 + 4
    for index in range(3):
        image, labels, weights = samples[index]
        assert labels[0].item() == index and 3 <= labels[1].item() < 7  # real classes follow
        assert weights.tolist() == [0.25, 0.75]
        expected = 0.25 * _input(0) + 0.75 * _input(200)
        assert image[0, 0, 0].item() == pytest.approx(expected, abs=1e-5)


def test_psi_grid_draws_from_the_21_values_and_real_fraction_limits_identities():
    synthetic = SolidFaces([0] * 50, list(range(50)))
    real = SolidFaces([100] * 40, [i // 4 for i in range(40)])  # 10 real identities
    samples = TrainingSamples(synthetic, 16, NO_AUGMENT, seed=3, real=real, real_fraction=0.3)
    assert samples.num_classes == 50 + 3
    drawn_psi, real_labels = set(), set()
    for index in range(50):
        _, labels, weights = samples[index]
        drawn_psi.add(round(weights[0].item(), 2))
        real_labels.add(labels[1].item() - 50)
    assert drawn_psi <= set(MIXUP_GRID) and len(drawn_psi) > 5
    assert real_labels == {0, 1, 2}  # only the first 30% of the real identities
