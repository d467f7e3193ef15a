"""Image folders: root/<identity>/*.jpg with sorted, reproducible labels."""

import pickle

import numpy as np
import pytest

from factory.errors import FormatError
from factory.formats.image_folder import ImageFolderDataset
from factory.formats.images import encode_jpeg, encode_png


def _image(value):
    return np.full((12, 10, 3), value, np.uint8)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "faces"
    files = {
        "bob/b.PNG": encode_png(_image(30)),
        "bob/a.jpg": encode_jpeg(_image(20)),
        "alice/z.jpeg": encode_jpeg(_image(10)),
        "carol/x.JPG": encode_jpeg(_image(40)),
        "carol/notes.txt": b"not an image",
        "carol/.hidden.jpg": b"junk",
        "carol/deeper/y.jpg": encode_jpeg(_image(250)),
        "empty_identity/readme.md": b"nothing here",
        "top_level.jpg": encode_jpeg(_image(250)),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_labels_order_and_images(folder):
    dataset = ImageFolderDataset(str(folder))
    assert dataset.class_names == ["alice", "bob", "carol"]
    assert dataset.num_classes == 3
    assert len(dataset) == 4
    assert dataset.labels.dtype == np.int64 and dataset.labels.tolist() == [0, 1, 1, 2]
    assert dataset.uri(1).endswith("bob/a.jpg") and dataset.uri(2).endswith("bob/b.PNG")
    for index, value in enumerate([10, 20, 30, 40]):
        image = dataset.image(index)
        assert image.shape == (12, 10, 3) and image.dtype == np.uint8
        assert abs(int(image.mean()) - value) <= 2


def test_raw_is_the_stored_file(folder):
    dataset = ImageFolderDataset(str(folder))
    assert dataset.raw(2) == (folder / "bob" / "b.PNG").read_bytes()
    assert dataset.raw(0) == (folder / "alice" / "z.jpeg").read_bytes()


def test_pickled_copy_reads_the_same(folder):
    dataset = ImageFolderDataset(str(folder))
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.labels.tolist() == dataset.labels.tolist()
    np.testing.assert_array_equal(copy.image(2), dataset.image(2))


def test_missing_root_is_a_format_error(tmp_path):
    with pytest.raises(FormatError, match="not found") as info:
        ImageFolderDataset(str(tmp_path / "absent"))
    assert str(tmp_path / "absent") in str(info.value)


def test_folder_without_images_is_a_format_error(tmp_path):
    (tmp_path / "someone").mkdir()
    (tmp_path / "someone" / "list.txt").write_text("x")
    with pytest.raises(FormatError, match="no images found"):
        ImageFolderDataset(str(tmp_path))


def test_corrupt_image_names_its_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.jpg").write_bytes(b"nope")
    dataset = ImageFolderDataset(str(tmp_path))
    with pytest.raises(FormatError, match="broken.jpg"):
        dataset.image(0)
