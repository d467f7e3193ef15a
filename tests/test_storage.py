"""URI storage: atomic writes and clear errors for unwritable locations."""

import os

import pytest

from factory import storage
from factory.errors import UserError


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = str(tmp_path / "sub" / "file.bin")
    with pytest.raises(RuntimeError):
        with storage.atomic_output(target) as stream:
            stream.write(b"partial")
            raise RuntimeError("crash mid-write")
    assert not os.path.exists(target)
    assert os.listdir(tmp_path / "sub") == []


def test_atomic_output_keeps_old_file_until_complete(tmp_path):
    target = str(tmp_path / "file.txt")
    storage.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with storage.atomic_output(target) as stream:
            stream.write(b"new")
            raise RuntimeError
    assert open(target).read() == "old"


def test_ensure_writable_names_the_location(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError) as info:
        storage.ensure_writable(str(blocker / "out"))
    assert str(blocker / "out") in str(info.value)


def test_file_uri_and_plain_path_agree(tmp_path):
    storage.write_text(str(tmp_path / "x.txt"), "hello")
    assert storage.read_text(f"file://{tmp_path}/x.txt") == "hello"
    assert storage.listdir(f"file://{tmp_path}") == ["x.txt"]
