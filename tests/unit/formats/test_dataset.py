"""open_dataset picks the reader from what the URI holds; both readers satisfy FaceDataset."""

import numpy as np
import pytest

from factory.errors import FormatError
from factory.formats.dataset import FaceDataset, open_dataset
from factory.formats.image_folder import ImageFolderDataset
from factory.formats.images import encode_jpeg
from factory.formats.recordio import InsightFaceRecordDataset, write_insightface_rec


@pytest.fixture
def rec_dir(tmp_path):
    out = tmp_path / "rec"
    jpeg = encode_jpeg(np.full((8, 8, 3), 90, np.uint8))
    write_insightface_rec(str(out), [(0, jpeg), (1, jpeg)], num_images=2, num_classes=2,
                          image_size=(8, 8))
    return out


@pytest.fixture
def image_dir(tmp_path):
    root = tmp_path / "folder"
    (root / "id0").mkdir(parents=True)
    (root / "id0" / "0.jpg").write_bytes(encode_jpeg(np.zeros((8, 8, 3), np.uint8)))
    return root


def test_record_directory(rec_dir):
    dataset = open_dataset(str(rec_dir))
    assert isinstance(dataset, InsightFaceRecordDataset)
    assert isinstance(dataset, FaceDataset)
    assert dataset.labels.tolist() == [0, 1] and dataset.num_classes == 2
    assert dataset.image(1).shape == (8, 8, 3)


def test_rec_file_opens_its_directory(rec_dir):
    dataset = open_dataset(str(rec_dir / "train.rec"))
    assert isinstance(dataset, InsightFaceRecordDataset) and len(dataset) == 2


def test_image_folder(image_dir):
    dataset = open_dataset(str(image_dir))
    assert isinstance(dataset, ImageFolderDataset)
    assert isinstance(dataset, FaceDataset)
    assert len(dataset) == 1 and dataset.num_classes == 1


def test_record_directory_wins_over_subfolders(rec_dir):
    (rec_dir / "extra").mkdir()
    assert isinstance(open_dataset(str(rec_dir)), InsightFaceRecordDataset)


def test_broken_record_directory_reports_the_missing_file(rec_dir):
    (rec_dir / "train.idx").unlink()
    with pytest.raises(FormatError, match="train.idx"):
        open_dataset(str(rec_dir))


@pytest.mark.parametrize("make", ["missing", "empty_dir", "plain_file"])
def test_unrecognised_uri(tmp_path, make):
    target = tmp_path / "data"
    if make == "empty_dir":
        target.mkdir()
        (target / "file.txt").write_text("x")
    elif make == "plain_file":
        target.write_text("x")
    with pytest.raises(FormatError) as info:
        open_dataset(str(target))
    assert str(info.value) == (
        f"{target}: expected an insightface RecordIO directory (train.rec, train.idx, property), "
        "a shard directory (shards/shard-NNNNNN.tar) or an image folder (root/identity/*.jpg)")


def test_a_selection_needs_shards(rec_dir):
    with pytest.raises(FormatError, match="needs a synthesised dataset of shards"):
        open_dataset(str(rec_dir), m_range=(0.0, 1.0))


def test_protocol_rejects_incomplete_objects():
    assert not isinstance(object(), FaceDataset)
