"""Image folders: root/<identity>/*.jpg with sorted, reproducible labels."""

import pickle

import numpy as np
import pytest

from factory.errors import FormatError
from factory.formats.confined import ConfinedFolder
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


@pytest.mark.parametrize("link", ["bob/zz_leak.jpg", "dave"])
def test_a_link_out_of_the_folder_is_refused_naming_it(folder, tmp_path, link):
    """A file, or a whole identity folder, linked to somewhere outside the root is refused when
    the folder is opened, before anything is read from it."""
    outside = tmp_path / "outside"
    (outside / "photos").mkdir(parents=True)
    (outside / "secret.txt").write_text("TOP SECRET")
    (outside / "photos" / "p.jpg").write_bytes(encode_jpeg(_image(60)))
    target = outside / ("secret.txt" if link.endswith(".jpg") else "photos")
    (folder / link).symlink_to(target)
    with pytest.raises(FormatError, match="refused, a link to") as info:
        ImageFolderDataset(str(folder))
    assert str(info.value).startswith(f"{folder / link}") and str(target) in str(info.value)


def test_links_that_stay_inside_the_folder_and_a_linked_root_are_read(folder, tmp_path):
    (folder / "bob" / "again.jpg").symlink_to(folder / "alice" / "z.jpeg")
    (folder / "dave").symlink_to(folder / "carol")
    (tmp_path / "linked_root").symlink_to(folder)
    dataset = ImageFolderDataset(str(tmp_path / "linked_root"))
    assert dataset.class_names == ["alice", "bob", "carol", "dave"] and len(dataset) == 6
    assert dataset.raw(2) == (folder / "alice" / "z.jpeg").read_bytes()  # bob/again.jpg


@pytest.mark.parametrize("root", ["{tmp}/faces", "s3://bucket/faces"])
@pytest.mark.parametrize("parts", [("..", "secret.txt"), ("a", ".."), ("a/../..", "x.jpg")])
def test_names_that_lead_up_and_out_are_refused(tmp_path, root, parts):
    root = root.format(tmp=tmp_path)
    with pytest.raises(FormatError, match=r"refused, expected plain names below .*'\.\.'"):
        ConfinedFolder(root).join(*parts)
