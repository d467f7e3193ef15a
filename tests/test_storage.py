"""URI storage: atomic writes and clear errors for unwritable locations."""

import os

import pytest

from factory import storage
from factory.errors import FormatError, UserError


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


def test_join_keeps_a_query_last():
    assert storage.join("s3://bucket/data?region=eu-west-1", "shards", "a.tar") == \
        "s3://bucket/data/shards/a.tar?region=eu-west-1"
    assert storage.join("s3://bucket/data", "a") == "s3://bucket/data/a"


def test_gcs_uris_get_a_retry_bound_unless_they_set_one():
    limit = storage.GCS_RETRY_SECONDS
    assert storage._bounded("gs://b/x") == f"gs://b/x?retry_limit_seconds={limit}"
    assert storage._bounded("gs://b/x?scheme=http") == \
        f"gs://b/x?scheme=http&retry_limit_seconds={limit}"
    assert storage._bounded("gs://b/x?retry_limit_seconds=5") == "gs://b/x?retry_limit_seconds=5"
    assert storage._bounded("/local/x") == "/local/x"


def test_s3_uris_open_files_for_writing_only_when_they_are_sent():
    assert storage._bounded("s3://b/x") == "s3://b/x?allow_delayed_open=true"
    assert storage._bounded("s3://b/x?region=eu-west-1") == \
        "s3://b/x?region=eu-west-1&allow_delayed_open=true"
    assert storage._bounded("s3://b/x?allow_delayed_open=false") == \
        "s3://b/x?allow_delayed_open=false"


@pytest.mark.parametrize("content, match", [
    (b"\xff\xfe\x00junk", "not valid JSON"), (b'{"a": ', "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"), (b"[1, 2]", "expected a JSON object, found list"),
])
def test_read_json_object_names_the_file(tmp_path, content, match):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=match) as info:
        storage.read_json_object(str(path))
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
