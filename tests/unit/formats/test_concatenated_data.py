"""Several training sets read as one (``recognizer.extra_data``): CemiFace's 1.2M set is two
synthesised datasets, the 1.0M set and 40k further identities x 5."""

from __future__ import annotations

import numpy as np
import pytest

from factory.config import FactoryConfig
from factory.formats.dataset import ConcatenatedDataset, open_training_data, training_targets


class Faces:
    """A stand-in training set: image ``i`` is filled with ``base + i``."""

    def __init__(self, labels: list[int], base: int):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes = int(self.labels.max()) + 1
        self.base = base

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, index: int) -> np.ndarray:
        return np.full((2, 2, 3), self.base + index, dtype=np.uint8)


class MixedFaces(Faces):
    """A stand-in synthetic set whose last image belongs to an identity-mixup identity of
    classes 0 and 1 (phi 0.7), as shards give it."""

    def targets(self, index: int) -> tuple[tuple[int, int], tuple[float, float]]:
        if index == len(self) - 1:
            return (0, 1), (0.7, 0.3)
        label = int(self.labels[index])
        return (label, label), (1.0, 0.0)


def test_members_keep_their_images_and_later_identities_are_numbered_after_earlier_ones():
    first = Faces([0, 0, 1, 1, 2], base=0)
    second = MixedFaces([0, 1, 1], base=100)
    both = ConcatenatedDataset([first, second])
    assert len(both) == 8 and both.num_classes == 5
    assert both.labels.tolist() == [0, 0, 1, 1, 2, 3, 4, 4]
    assert [int(both.image(i)[0, 0, 0]) for i in range(8)] == [0, 1, 2, 3, 4, 100, 101, 102]
    assert training_targets(both, 4) == ((2, 2), (1.0, 0.0))
    assert training_targets(both, 6) == ((4, 4), (1.0, 0.0))
    # SynFace's two-hot target of a mixed identity moves with its member's labels
    assert training_targets(both, 7) == ((3, 4), (0.7, 0.3))
    with pytest.raises(IndexError):
        both.image(8)


def test_one_uri_opens_that_dataset_itself(world):
    train = str(world / "faceworld" / "train")
    single = open_training_data([train])
    assert not isinstance(single, ConcatenatedDataset)
    doubled = open_training_data([train, train])
    assert len(doubled) == 2 * len(single)
    assert doubled.num_classes == 2 * single.num_classes


def test_replacing_the_training_data_drops_the_extra_sets():
    config = FactoryConfig()
    config.recognizer.data = "/data/casia"
    config.recognizer.extra_data = ["/data/extra-40k"]
    config.recognizer.train_on("/data/synthetic")
    assert config.recognizer.data == "/data/synthetic" and config.recognizer.extra_data == []
