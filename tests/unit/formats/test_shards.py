"""WebDataset shards: deterministic atomic writes, safe streaming reads, ShardDataset selection,
and the webdataset reader agrees on the layout (Ray Data's: tests/integration/test_shards.py)."""

import hashlib
import io
import json
import pickle
import tarfile

import numpy as np
import pytest

from factory import storage
from factory.errors import FormatError, UserError
from factory.formats.dataset import FaceDataset, open_dataset
from factory.formats.images import decode_image, encode_jpeg
from factory.formats.shards import (ShardDataset, ShardSample, iter_shard, refuse_inside_dataset,
                                    scan_shard, shard_name, shard_pattern, write_shard)
from helpers import ORIGINAL_LABELS, shard_meta, shard_samples, write_two_shards


@pytest.fixture
def root(tmp_path):
    """A dataset of two shards, samples 0-3 and 4-7."""
    return write_two_shards(tmp_path / "synthetic")


def _expected(root) -> dict[str, bytes]:
    """JPEG bytes by key, as the fixture wrote them."""
    return {sample.key: sample.jpg for seed, indices in ((0, range(4)), (1, range(4, 8)))
            for sample in shard_samples(indices, seed)}


def _raw_tar(path, members) -> None:
    """A tar made with tarfile directly: ``members`` are ``(name, data)`` or ready TarInfos."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def _files(directory) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


def test_names_and_pattern():
    assert shard_name(42) == "shard-000042.tar"
    assert shard_pattern(2) == "shard-{000000..000001}.tar"


def test_round_trip(tmp_path):
    samples = shard_samples(range(4))
    uri = str(tmp_path / "shard-000000.tar")
    written = write_shard(uri, samples)
    assert written.count == 4
    assert written.size_bytes == (tmp_path / "shard-000000.tar").stat().st_size
    read = list(iter_shard(uri))
    assert [row["__key__"] for row in read] == [sample.key for sample in samples]
    for row, sample in zip(read, samples):
        assert set(row) == {"__key__", "cls", "jpg", "json"}
        assert row["cls"] == sample.label and row["json"] == sample.meta
        assert row["jpg"] == sample.jpg
        np.testing.assert_array_equal(decode_image(row["jpg"]), decode_image(sample.jpg))


def test_identical_input_gives_identical_bytes(tmp_path):
    first, second = tmp_path / "a" / "s.tar", tmp_path / "b" / "s.tar"
    one = write_shard(str(first), shard_samples(range(3)))
    two = write_shard(str(second), shard_samples(range(3)))
    assert one == two
    assert first.read_bytes() == second.read_bytes()
    assert hashlib.sha256(first.read_bytes()).hexdigest() == one.sha256


def test_rewrite_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "shard-000000.tar"
    write_shard(str(target), shard_samples(range(4)))
    write_shard(str(target), shard_samples(range(2), seed=5))
    assert [row["__key__"] for row in iter_shard(str(target))] == ["000000", "000001"]
    assert _files(tmp_path) == ["shard-000000.tar"]


@pytest.mark.parametrize("key", ["", "a.b", "a/b", "dup"])
def test_bad_keys_write_nothing(tmp_path, key):
    samples = shard_samples(range(2))
    samples[1].key = key
    if key == "dup":
        samples[0].key = key
    with pytest.raises(ValueError, match="key"):
        write_shard(str(tmp_path / "out" / "shard-000000.tar"), samples)
    assert _files(tmp_path) == []


def test_metadata_must_be_strict_json(tmp_path):
    samples = shard_samples(range(2))
    samples[1].meta["similarity_center"] = float("nan")
    with pytest.raises(ValueError, match="JSON"):
        write_shard(str(tmp_path / "shard-000000.tar"), samples)
    assert _files(tmp_path) == []


def test_webdataset_reads_the_shards(root):
    import webdataset

    urls = str(root / "shards" / shard_pattern(2))
    rows = list(webdataset.WebDataset(urls, shardshuffle=False).decode("rgb"))
    assert [row["__key__"] for row in rows] == [f"{index:06d}" for index in range(8)]
    for index, row in enumerate(rows):
        assert row["json"] == shard_meta(index) and row["cls"] == ORIGINAL_LABELS[index]
        assert row["jpg"].shape == (16, 16, 3) and row["jpg"].dtype == np.float32  # "rgb": 0..1


def _symlink() -> tarfile.TarInfo:
    info = tarfile.TarInfo("link.jpg")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return info


@pytest.mark.parametrize("member", ["/etc/evil.jpg", "../evil.jpg", "sub/../x.jpg", "link.jpg"])
def test_unsafe_members_are_refused(tmp_path, member):
    shard = tmp_path / "data" / "shards" / "shard-000000.tar"
    good = [("000000.cls", b"1"), ("000000.jpg", b"x")]
    bad = _symlink() if member == "link.jpg" else (member, b"x")
    _raw_tar(shard, [*good, bad])
    before = _files(tmp_path)
    with pytest.raises(FormatError, match="refused") as info:
        list(iter_shard(str(shard)))
    assert member in str(info.value) and str(shard) in str(info.value)
    with pytest.raises(FormatError, match="refused") as info:
        ShardDataset(str(tmp_path / "data"))
    assert member in str(info.value)
    assert _files(tmp_path) == before


def _last_header_offset(path) -> int:
    with tarfile.open(path) as tar:
        return tar.getmembers()[-1].offset


@pytest.mark.parametrize("damage", ["half", "at_a_header", "corrupt_header"])
def test_damaged_shard_is_a_format_error(root, damage):
    shard = root / "shards" / shard_name(1)
    data = shard.read_bytes()
    cut = _last_header_offset(shard)
    if damage == "half":
        data = data[:len(data) // 2]
    elif damage == "at_a_header":  # tarfile alone would read this as a shorter, valid tar
        data = data[:cut]
    else:
        data = data[:cut] + b"\xff" * 512 + data[cut + 512:]
    shard.write_bytes(data)
    with pytest.raises(FormatError, match="truncated or corrupt") as info:
        list(iter_shard(str(shard)))
    assert str(shard) in str(info.value)
    with pytest.raises(FormatError, match="truncated or corrupt") as info:
        ShardDataset(str(root))
    assert str(shard) in str(info.value)


@pytest.mark.parametrize("members, message", [
    ([("k.cls", b"one"), ("k.jpg", b"x")], "k.cls': expected a decimal integer"),
    ([("k.cls", b"1"), ("k.jpg", b"x"), ("k.json", b"[1, 2]")], "k.json': expected a UTF-8 JSON"),
    ([("k.cls", b"1"), ("k.jpg", b"x"), ("j.cls", b"1"), ("j.jpg", b"x"), ("k.json", b"{}")],
     "key 'k' appears again"),
])
def test_bad_members_are_format_errors(tmp_path, members, message):
    shard = tmp_path / "data" / "shards" / "shard-000000.tar"
    _raw_tar(shard, members)
    with pytest.raises(FormatError, match=message):
        list(iter_shard(str(shard)))
    with pytest.raises(FormatError, match=message):
        ShardDataset(str(tmp_path / "data"))


@pytest.mark.parametrize("missing", ["jpg", "cls"])
def test_sample_without_jpg_or_cls(tmp_path, missing):
    shard = tmp_path / "data" / "shards" / "shard-000000.tar"
    _raw_tar(shard, [(f"k.{extension}", b"1") for extension in ("cls", "jpg")
                     if extension != missing])
    with pytest.raises(FormatError, match=f"sample 'k' has no .{missing}") as info:
        ShardDataset(str(tmp_path / "data"))
    assert str(shard) in str(info.value)


def test_dataset_labels_images_and_metadata(root):
    dataset = ShardDataset(str(root))
    assert isinstance(dataset, FaceDataset)
    assert len(dataset) == 8 and dataset.num_classes == 3
    assert dataset.original_labels.tolist() == ORIGINAL_LABELS
    assert dataset.labels.dtype == np.int64
    assert dataset.labels.tolist() == [2, 0, 1, 2, 0, 1, 2, 0]
    assert dataset.metadata == [shard_meta(index) for index in range(8)]
    expected = _expected(root)
    for index, key in enumerate(dataset.keys):
        image = dataset.image(index)
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, decode_image(expected[key]))


def test_dataset_keeps_at_most_max_open_shards_files_open(tmp_path, monkeypatch):
    """Reading back and forth over more shards than the bound still returns every image, with
    never more than the bound of files held open."""
    parts = [range(0, 3), range(3, 6), range(6, 8)]
    expected = {}
    for shard, indices in enumerate(parts):
        samples = shard_samples(indices, seed=shard)
        write_shard(str(tmp_path / "data" / "shards" / shard_name(shard)), samples)
        expected.update({sample.key: sample.jpg for sample in samples})
    dataset = ShardDataset(str(tmp_path / "data"))
    monkeypatch.setattr(dataset, "max_open_shards", 2)
    for index in [0, 3, 6, 0, 7, 4, 1, 6, 3]:
        assert dataset.raw(index) == expected[dataset.keys[index]]
        assert len(dataset._handles) <= 2
    assert list(dataset._handles) == [2, 1]  # the two most recently read shards


def test_selection_by_m_and_similarity(root):
    by_m = ShardDataset(str(root), m_range=(0.3, 0.6))  # inclusive: m 0.3 and 0.6
    assert by_m.keys == ["000001", "000002", "000005", "000006"]
    assert by_m.original_labels.tolist() == [10, 20, 20, 30]
    assert by_m.labels.tolist() == [0, 1, 1, 2] and by_m.num_classes == 3
    np.testing.assert_array_equal(by_m.image(2), decode_image(_expected(root)["000005"]))

    by_similarity = ShardDataset(str(root), similarity_range=(0.3, 0.4))
    assert by_similarity.keys == ["000003", "000004"]
    assert by_similarity.labels.tolist() == [1, 0]

    both = ShardDataset(str(root), m_range=(0.5, 1.0), similarity_range=(0.0, 0.5))
    assert both.keys == ["000002", "000003"] and both.labels.tolist() == [0, 1]


def test_selection_by_mixup_share(tmp_path):
    """Identities 0-2 are plain, 3-5 made by identity mixup, two samples each."""
    rng = np.random.default_rng(0)
    samples = [ShardSample(f"{label}x{copy}", encode_jpeg(rng.integers(0, 256, (8, 8, 3), np.uint8)),
                           label, {"m": 0.0, "similarity_center": 0.5,
                                   "mixup": {"partner": "p", "phi": 0.5} if label >= 3 else None})
               for label in range(6) for copy in range(2)]
    write_shard(str(tmp_path / "shards" / shard_name(0)), samples)

    def identities(share):
        return sorted(set(ShardDataset(str(tmp_path), mixup_share=share).original_labels.tolist()))

    assert identities(0.5) == [0, 1, 2, 3, 4, 5]
    assert identities(0.0) == [0, 1, 2]
    assert identities(1.0) == [3, 4, 5]
    assert identities(0.25) == [0, 1, 2, 3]  # 4 identities at most, one of them mixed
    assert len(ShardDataset(str(tmp_path), mixup_share=0.25)) == 8


def test_empty_selection_is_a_format_error(root):
    with pytest.raises(FormatError, match=r"no sample has m in \[2.0, 3.0\]"):
        ShardDataset(str(root), m_range=(2.0, 3.0))


def test_temporary_and_other_files_are_ignored(root):
    (root / "shards" / f"{storage.TEMP_MARKER}abc-shard-000002.tar").write_bytes(b"partial")
    (root / "shards" / "notes.txt").write_text("x")
    assert len(ShardDataset(str(root))) == 8


def test_no_shards(tmp_path):
    (tmp_path / "data" / "shards").mkdir(parents=True)
    (tmp_path / "data" / "shards" / f"{storage.TEMP_MARKER}x-shard-000000.tar").write_bytes(b"")
    with pytest.raises(FormatError) as info:
        ShardDataset(str(tmp_path / "data"))
    assert str(info.value) == (f"{tmp_path / 'data' / 'shards'}: no shards "
                               "(expected shard-NNNNNN.tar)")


def test_pickled_copy_after_reading(root):
    dataset = ShardDataset(str(root), m_range=(0.0, 0.6))
    first = dataset.image(0)
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.keys == dataset.keys and copy.labels.tolist() == dataset.labels.tolist()
    np.testing.assert_array_equal(copy.image(0), first)
    np.testing.assert_array_equal(copy.image(len(copy) - 1), dataset.image(len(dataset) - 1))


def _manifest(root, *shards, key="shard") -> None:
    """A manifest listing ``shards`` (indices) under ``key``: all the readers read of one."""
    (root / "manifest.json").write_text(json.dumps(
        {"shards": [{key: shard_name(index)} for index in shards]}))


def test_open_dataset_finds_shards(root):
    _manifest(root, 0, 1)
    dataset = open_dataset(str(root))
    assert isinstance(dataset, ShardDataset) and len(dataset) == 8


@pytest.mark.parametrize("key", ["shard", "name"])  # a synthesised dataset, a measured pool
def test_readers_read_the_shards_the_manifest_lists_not_the_folder(root, key):
    """A shard added to shards/ (or one whose entry was dropped) is not read as the dataset."""
    write_shard(str(root / "shards" / shard_name(2)), shard_samples(range(4), seed=2))
    assert len(ShardDataset(str(root))) == 12  # no manifest: every shards/*.tar
    _manifest(root, 0, 1, key=key)
    assert len(ShardDataset(str(root))) == 8
    _manifest(root, 1, key=key)
    assert ShardDataset(str(root)).keys == [f"{index:06d}" for index in range(4, 8)]


@pytest.mark.parametrize("shards, message", [
    ([{"shard": "../shard-000000.tar"}], "shard-NNNNNN.tar files, each once"),
    ([{"shard": shard_name(0)}, {"shard": shard_name(0)}], "shard-NNNNNN.tar files, each once"),
    ([{"shard": shard_name(0)}, {"shard": shard_name(5)}], "shard-000005.tar: file not found"),
])
def test_a_manifest_naming_bad_or_absent_shards_is_one_line(root, shards, message):
    (root / "manifest.json").write_text(json.dumps({"shards": shards}))
    with pytest.raises(UserError, match=message):
        ShardDataset(str(root))


def test_a_shard_linked_out_of_the_dataset_is_refused(root, tmp_path):
    elsewhere = tmp_path / "elsewhere.tar"
    (root / "shards" / shard_name(1)).rename(elsewhere)
    (root / "shards" / shard_name(1)).symlink_to(elsewhere)
    for manifest in (False, True):
        if manifest:
            _manifest(root, 0, 1)
        with pytest.raises(FormatError, match="refused, a link to") as info:
            ShardDataset(str(root))
        assert str(info.value).startswith(f"{root / 'shards' / shard_name(1)}: ")
        assert str(elsewhere) in str(info.value)


def test_a_link_inside_the_dataset_is_read(root):
    (root / "shards" / shard_name(1)).rename(root / "kept.tar")
    (root / "shards" / shard_name(1)).symlink_to(root / "kept.tar")
    assert len(ShardDataset(str(root))) == 8


def test_scan_shard_counts_what_readers_read_and_hashes_the_file(root):
    shard = root / "shards" / shard_name(0)
    scan = scan_shard(str(shard))
    assert (scan.count, scan.real_images, scan.labels) == (4, 0, {10, 20, 30})
    assert scan.sha256 == hashlib.sha256(shard.read_bytes()).hexdigest()


@pytest.mark.parametrize("out", ["synthetic/shards/shard-000002.tar", "synthetic/report/x",
                                 "synthetic/shards"])
def test_outputs_inside_a_dataset_are_refused(root, tmp_path, out):
    with pytest.raises(UserError, match=f"lies inside the synthesised dataset {root} ") as info:
        refuse_inside_dataset(str(tmp_path / out), "--out")
    assert str(info.value).startswith(f"--out {tmp_path / out}: ")
    refuse_inside_dataset(str(tmp_path / "elsewhere" / "out"), "--out")
    refuse_inside_dataset(str(root), "synthesis.out")  # a dataset itself is not inside one
