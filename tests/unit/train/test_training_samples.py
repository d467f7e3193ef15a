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
        assert labels[:2].tolist() == [index, index] and 3 <= labels[2].item() < 7  # real after
        assert weights.tolist() == [0.25, 0.0, 0.75]
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
        real_labels.add(labels[2].item() - 50)
    assert drawn_psi <= set(MIXUP_GRID) and len(drawn_psi) > 5
    assert real_labels == {0, 1, 2}  # only the first 30% of the real identities


def _mixup_shards(tmp_path, phi: float, labelling: str) -> str:
    """Plain identities 0 and 1, and identity 2 mixed from them (phi on 0), two samples each."""
    from factory.formats.images import encode_jpeg
    from factory.formats.shards import ShardSample, shard_name, write_shard

    rng = np.random.default_rng(0)
    mixup = {"partner": "b", "phi": phi, "parents": [0, 1], "labels": labelling}
    samples = [ShardSample(f"{label}x{copy}",
                           encode_jpeg(rng.integers(0, 256, (16, 16, 3), np.uint8)), label,
                           {"m": 0.0, "similarity_center": 0.5,
                            "mixup": mixup if label == 2 else None})
               for label in range(3) for copy in range(2)]
    write_shard(str(tmp_path / "shards" / shard_name(0)), samples)
    return str(tmp_path)


def test_identity_mixup_samples_reach_the_head_with_synface_soft_labels(tmp_path):
    from factory.formats.shards import ShardDataset

    dataset = ShardDataset(_mixup_shards(tmp_path, 0.3, "soft"))
    assert dataset.num_classes == 2  # the mixed identity is not a class of its own
    samples = TrainingSamples(dataset, 16, NO_AUGMENT, seed=0)
    assert samples.num_classes == 2
    _, labels, weights = samples[4]  # a sample of the mixed identity
    assert labels.tolist() == [0, 1]
    assert weights.tolist() == pytest.approx([0.3, 0.7])
    assert dataset.labels[4] == 1  # the heavier parent, for code that needs one label
    _, labels, weights = samples[0]
    assert labels.tolist() == [0, 0] and weights.tolist() == [1.0, 0.0]
    # With domain mixup the mixed targets are scaled by psi and the real class comes third.
    real = SolidFaces([200, 200], [0, 1])
    _, labels, weights = TrainingSamples(dataset, 16, NO_AUGMENT, seed=0, real=real,
                                         psi=0.5)[4]
    assert labels.tolist()[:2] == [0, 1] and labels[2].item() in (2, 3)
    assert weights.tolist() == pytest.approx([0.15, 0.35, 0.5])


def test_a_phi_of_one_never_makes_a_new_class(tmp_path):
    from factory.formats.shards import ShardDataset

    dataset = ShardDataset(_mixup_shards(tmp_path, 1.0, "soft"))
    assert dataset.num_classes == 2
    assert dataset.targets(4) == ((0, 1), (1.0, 0.0))


def test_new_class_labelling_and_a_missing_parent_give_the_mixed_identity_its_own_class(tmp_path):
    from factory.formats.shards import ShardDataset

    dataset = ShardDataset(_mixup_shards(tmp_path / "a", 0.3, "new_class"))
    assert dataset.num_classes == 3 and dataset.targets(4) == ((2, 2), (1.0, 0.0))
    # Parent 1 filtered out by a selection: soft labels need both parents as classes.
    parentless = ShardDataset(_mixup_shards(tmp_path / "b", 0.3, "soft"), mixup_share=0.5)
    assert sorted(set(parentless.original_labels.tolist())) == [0, 2]
    assert parentless.num_classes == 2
    assert parentless.targets(2) == ((1, 1), (1.0, 0.0))
