"""MXNet RecordIO: framing (incl. magic splitting), IRHeader packing, the insightface layout."""

import pickle
import struct

import numpy as np
import pytest

from factory.errors import FormatError
from factory.formats.images import encode_jpeg, encode_png
from factory.formats.recordio import (
    MAGIC,
    InsightFaceRecordDataset,
    IRHeader,
    RecordIOReader,
    RecordIOWriter,
    pack_record,
    unpack_record,
    write_insightface_rec,
)

MAGIC_BYTES = struct.pack("<I", MAGIC)


def _write(tmp_path, records):
    rec, idx = str(tmp_path / "x.rec"), str(tmp_path / "x.idx")
    with RecordIOWriter(rec, idx) as writer:
        for key, payload in records.items():
            writer.write(key, payload)
    return rec, idx


def _frames(data: bytes, offset: int = 0):
    """(cflag, length) of every frame of the record at ``offset``, parsed independently."""
    frames = []
    while True:
        magic, lrec = struct.unpack_from("<II", data, offset)
        assert magic == MAGIC
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        frames.append((cflag, length))
        offset += 8 + length + (-length % 4)
        if cflag in (0, 3):
            return frames


def test_round_trip_and_framing(tmp_path):
    records = {5: b"abc", 2: b"", 9: bytes(range(256)) * 3, 1: b"12345678"}
    rec, idx = _write(tmp_path, records)
    reader = RecordIOReader(rec, idx)
    assert reader.keys.tolist() == [5, 2, 9, 1]
    assert len(reader) == 4
    for key, payload in records.items():
        assert reader.read(key) == payload
    data = open(rec, "rb").read()
    assert len(data) % 4 == 0
    assert data[:8] == struct.pack("<II", MAGIC, 3) and data[8:12] == b"abc\0"
    lines = open(idx).read().splitlines()
    assert lines[0] == "5\t0" and lines[1] == "2\t12"


@pytest.mark.parametrize("payload, expected", [
    (b"abcd" + MAGIC_BYTES + b"efgh", [(1, 4), (3, 4)]),
    (MAGIC_BYTES + b"abcdefgh" + MAGIC_BYTES + b"ij" + b"\0\0" + MAGIC_BYTES + b"xyz",
     [(1, 0), (2, 8), (2, 4), (3, 3)]),
    (b"abcd" + MAGIC_BYTES, [(1, 4), (3, 0)]),
    (MAGIC_BYTES + MAGIC_BYTES, [(1, 0), (2, 0), (3, 0)]),
    (b"a" + MAGIC_BYTES + b"bcd", [(0, 8)]),  # unaligned: not split
])
def test_magic_in_payload_is_split_and_reassembled(tmp_path, payload, expected):
    rec, idx = _write(tmp_path, {0: payload, 1: b"after"})
    data = open(rec, "rb").read()
    assert _frames(data) == expected
    reader = RecordIOReader(rec, idx)
    assert reader.read(0) == payload
    assert reader.read(1) == b"after"


def test_single_label_header_round_trip():
    payload = pack_record(IRHeader(0, 7.0, 3, 4), b"jpegdata")
    assert len(payload) == 24 + 8
    header, data = unpack_record(payload)
    assert header == IRHeader(0, 7.0, 3, 4)
    assert data == b"jpegdata"


def test_multi_label_header_round_trip():
    payload = pack_record(IRHeader(0, (1.0, 2.5, 300.0), 11, 0), b"xyz")
    assert struct.unpack_from("<I", payload)[0] == 3  # flag is the label count, as in mxnet
    assert len(payload) == 24 + 3 * 4 + 3
    header, data = unpack_record(payload)
    assert header.flag == 3 and header.label == (1.0, 2.5, 300.0) and header.id == 11
    assert data == b"xyz"


def test_labels_beyond_float32_precision_are_refused():
    with pytest.raises(ValueError, match="2\\*\\*24"):
        pack_record(IRHeader(0, float(2**24), 0, 0), b"")
    with pytest.raises(ValueError):
        pack_record(IRHeader(2, (1, 2**24 + 1), 0, 0), b"")
    pack_record(IRHeader(0, float(2**24 - 1), 0, 0), b"")


def test_short_payload_is_a_format_error():
    with pytest.raises(FormatError, match="somewhere.rec"):
        unpack_record(b"\0" * 10, source="somewhere.rec")
    with pytest.raises(FormatError, match="flag 5"):
        unpack_record(struct.pack("<IfQQ", 5, 0.0, 0, 0) + b"\0" * 8)


def test_writer_failure_leaves_no_files(tmp_path):
    rec, idx = tmp_path / "x.rec", tmp_path / "x.idx"
    with pytest.raises(RuntimeError):
        with RecordIOWriter(str(rec), str(idx)) as writer:
            writer.write(0, b"data")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_duplicate_keys(tmp_path):
    with pytest.raises(ValueError, match="twice"):
        with RecordIOWriter(str(tmp_path / "x.rec"), str(tmp_path / "x.idx")) as writer:
            writer.write(3, b"a")
            writer.write(3, b"b")


def test_bad_magic_is_a_format_error(tmp_path):
    rec, idx = _write(tmp_path, {0: b"abcd", 1: b"efgh"})
    data = bytearray(open(rec, "rb").read())
    data[12:16] = b"\xde\xad\xbe\xef"
    open(rec, "wb").write(bytes(data))
    reader = RecordIOReader(rec, idx)
    assert reader.read(0) == b"abcd"
    with pytest.raises(FormatError) as info:
        reader.read(1)
    message = str(info.value)
    assert rec in message and "0xced7230a" in message and "0xefbeadde" in message


def test_truncated_record_is_a_format_error(tmp_path):
    rec, idx = _write(tmp_path, {0: b"x" * 100})
    open(rec, "r+b").truncate(60)
    with pytest.raises(FormatError, match="truncated"):
        RecordIOReader(rec, idx).read(0)


def test_unknown_key(tmp_path):
    rec, idx = _write(tmp_path, {0: b"abcd", 7: b"efgh"})
    reader = RecordIOReader(rec, idx)
    assert 7 in reader and 3 not in reader
    with pytest.raises(FormatError, match="key 42"):
        reader.read(42)


@pytest.mark.parametrize("text, match", [
    ("0\t0\nnot-a-line\n", "line 2: expected 'key<TAB>offset', found 'not-a-line'"),
    ("0\t0\n\n1\t12\n2\n", "line 4"),
    ("0\t0\n1\t4\t9\n", "line 2"),
    ("0\t0\n1\t99999999999999999999\n", "line 2"),
    ("0\t0\n1\t12\n0\t24\n", "key 0 appears more than once"),
    ("0\t-8\n", "offsets >= 0"),
    ("\xff\xfe binary", "binary data"),
])
def test_bad_index_is_a_format_error(tmp_path, text, match):
    rec, idx = _write(tmp_path, {0: b"abcd"})
    open(idx, "wb").write(text.encode("latin-1"))
    with pytest.raises(FormatError, match=match) as info:
        RecordIOReader(rec, idx)
    assert idx in str(info.value)


def test_reader_pickles_before_and_after_reading(tmp_path):
    rec, idx = _write(tmp_path, {0: b"first", 1: b"second" + MAGIC_BYTES + b"!"})
    reader = RecordIOReader(rec, idx)
    fresh = pickle.loads(pickle.dumps(reader))
    assert fresh.read(1) == b"second" + MAGIC_BYTES + b"!"
    assert reader.read(0) == b"first"  # opens the handle
    copy = pickle.loads(pickle.dumps(reader))
    assert copy.read(0) == b"first" and copy.read(1) == reader.read(1)
    reader.close()
    assert reader.read(0) == b"first"  # reopens after close


def _images(labels):
    """One distinguishable 16x16 JPEG per sample: brightness encodes the index."""
    return [(label, encode_jpeg(np.full((16, 16, 3), 10 + 20 * i, np.uint8)))
            for i, label in enumerate(labels)]


def test_insightface_layout_round_trip(tmp_path):
    labels = [0, 0, 0, 1, 2, 2]
    samples = _images(labels)
    out = tmp_path / "data"
    write_insightface_rec(str(out), iter(samples), num_images=6, num_classes=3,
                          image_size=(16, 16))
    assert sorted(p.name for p in out.iterdir()) == ["property", "train.idx", "train.rec"]
    assert (out / "property").read_text() == "3,16,16"

    reader = RecordIOReader(str(out / "train.rec"), str(out / "train.idx"))
    assert reader.keys.tolist() == list(range(10))
    header, _ = unpack_record(reader.read(0))
    assert header.flag == 2 and header.label == (7.0, 10.0)
    assert unpack_record(reader.read(8))[0].label == (4.0, 5.0)  # identity 1: key 4 only
    assert unpack_record(reader.read(5))[0] == IRHeader(0, 2.0, 5, 0)

    dataset = InsightFaceRecordDataset(str(out))
    assert len(dataset) == 6
    assert dataset.num_classes == 3 and dataset.image_size == (16, 16)
    assert dataset.labels.dtype == np.int64 and dataset.labels.tolist() == labels
    assert dataset.raw(3) == samples[3][1]
    for index in range(6):
        image = dataset.image(index)
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8
        assert abs(int(image.mean()) - (10 + 20 * index)) <= 3


def test_identity_labels_come_from_identity_records(tmp_path):
    """Image headers are not consulted in the header layout (insightface's own reading)."""
    out = tmp_path / "data"
    out.mkdir()
    jpeg = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    with RecordIOWriter(str(out / "train.rec"), str(out / "train.idx")) as writer:
        writer.write(0, pack_record(IRHeader(2, (4, 6), 0, 0), b""))
        for key in (1, 2, 3):
            writer.write(key, pack_record(IRHeader(0, 99.0, key, 0), jpeg))
        writer.write(4, pack_record(IRHeader(2, (1, 2), 0, 0), b""))
        writer.write(5, pack_record(IRHeader(2, (2, 4), 0, 0), b""))
    (out / "property").write_text("2,8,8\n")
    dataset = InsightFaceRecordDataset(str(out))
    assert dataset.labels.tolist() == [0, 1, 1]


def test_dataset_without_header_record(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    samples = _images([1, 0, 1])
    with RecordIOWriter(str(out / "train.rec"), str(out / "train.idx")) as writer:
        for key, (label, jpeg) in zip((0, 1, 2), samples):
            writer.write(key, pack_record(IRHeader(0, float(label), key, 0), jpeg))
    (out / "property").write_text("2,16,16")
    dataset = InsightFaceRecordDataset(str(out))
    assert len(dataset) == 3
    assert dataset.labels.tolist() == [1, 0, 1]
    assert abs(int(dataset.image(2).mean()) - 50) <= 3


@pytest.mark.parametrize("labels, num_images, num_classes, match", [
    ([0, 0, 1], 4, 2, "expected num_images=4"),
    ([0, 0, 1], 2, 2, "more than num_images"),
    ([0, 1, 0], 3, 2, "out of order"),
    ([0, 2, 2], 3, 3, "out of order"),
    ([1, 1, 2], 3, 3, "out of order"),
    ([0, 1, 2], 3, 2, ">= num_classes"),
    ([0, 0, 1], 3, 3, "expected 3"),
])
def test_write_insightface_rec_validates(tmp_path, labels, num_images, num_classes, match):
    out = tmp_path / "data"
    with pytest.raises(ValueError, match=match):
        write_insightface_rec(str(out), _images(labels), num_images=num_images,
                              num_classes=num_classes, image_size=(16, 16))
    assert not out.exists() or not any(out.iterdir())


@pytest.fixture
def dataset_dir(tmp_path):
    out = tmp_path / "data"
    write_insightface_rec(str(out), _images([0, 0, 1, 1]), num_images=4, num_classes=2,
                          image_size=(16, 16))
    return out


def test_truncated_rec_fails_at_open_naming_train_rec(dataset_dir):
    rec = dataset_dir / "train.rec"
    index_lines = (dataset_dir / "train.idx").read_text().splitlines()
    offsets = dict(line.split("\t") for line in index_lines)
    last_image_end = int(offsets["5"])  # the first identity record follows the last image
    rec.write_bytes(rec.read_bytes()[:last_image_end - 10])
    with pytest.raises(FormatError) as info:
        InsightFaceRecordDataset(str(dataset_dir))
    assert "train.rec" in str(info.value) and "\n" not in str(info.value)


def test_truncated_identity_records_fail_at_open(dataset_dir):
    rec = dataset_dir / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-40])
    with pytest.raises(FormatError, match="train.rec"):
        InsightFaceRecordDataset(str(dataset_dir))


@pytest.mark.parametrize("name", ["train.rec", "train.idx", "property"])
def test_missing_file_is_named(dataset_dir, name):
    (dataset_dir / name).unlink()
    with pytest.raises(FormatError, match=name):
        InsightFaceRecordDataset(str(dataset_dir))


@pytest.mark.parametrize("text", ["", "2,16", "two,16,16", "2,16,16,3", "0,16,16"])
def test_bad_property_is_a_format_error(dataset_dir, text):
    (dataset_dir / "property").write_text(text)
    with pytest.raises(FormatError, match="property"):
        InsightFaceRecordDataset(str(dataset_dir))


def test_labels_beyond_property_num_classes(dataset_dir):
    (dataset_dir / "property").write_text("1,16,16")
    with pytest.raises(FormatError, match="num_classes"):
        InsightFaceRecordDataset(str(dataset_dir))


def test_dataset_pickles_before_and_after_reading(dataset_dir):
    dataset = InsightFaceRecordDataset(str(dataset_dir))
    copy = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(copy.image(1), dataset.image(1))
    again = pickle.loads(pickle.dumps(dataset))
    assert again.raw(3) == dataset.raw(3)
    assert again.labels.tolist() == [0, 0, 1, 1] and again.num_classes == 2


def test_png_payloads_work_too(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    write_insightface_rec(str(tmp_path), [(0, encode_png(image))], num_images=1, num_classes=1,
                          image_size=(16, 16))
    np.testing.assert_array_equal(InsightFaceRecordDataset(str(tmp_path)).image(0), image)


def _custom_dir(tmp_path, records, property_text="2,8,8"):
    out = tmp_path / "custom"
    with RecordIOWriter(str(out / "train.rec"), str(out / "train.idx")) as writer:
        for key, (header, data) in records.items():
            writer.write(key, pack_record(header, data))
    (out / "property").write_text(property_text)
    return out


def test_header_beyond_record_count_is_a_format_error(tmp_path):
    jpeg = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    out = _custom_dir(tmp_path, {0: (IRHeader(2, (2, 9), 0, 0), b""),
                                 1: (IRHeader(0, 0.0, 1, 0), jpeg)})
    with pytest.raises(FormatError, match=r"record 0: expected header labels .* found \(2, 9\)"):
        InsightFaceRecordDataset(str(out))


def test_image_outside_every_identity_is_a_format_error(tmp_path):
    jpeg = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    out = _custom_dir(tmp_path, {0: (IRHeader(2, (3, 4), 0, 0), b""),
                                 1: (IRHeader(0, 0.0, 1, 0), jpeg),
                                 2: (IRHeader(0, 0.0, 2, 0), jpeg),
                                 3: (IRHeader(2, (1, 2), 0, 0), b"")})
    with pytest.raises(FormatError, match="image key 2 belongs to no identity"):
        InsightFaceRecordDataset(str(out))


def test_fractional_label_without_header_is_a_format_error(tmp_path):
    jpeg = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    out = _custom_dir(tmp_path, {0: (IRHeader(0, 0.0, 0, 0), jpeg),
                                 1: (IRHeader(0, 1.5, 1, 0), jpeg)})
    with pytest.raises(FormatError, match="record 1: expected an integer label"):
        InsightFaceRecordDataset(str(out))


@pytest.mark.parametrize("text, match", [
    ("3,16,16", r"says 3 classes, the records have labels 0 \.\. 1 \(2 classes\)"),
    ("2,16,12", r"says 16x12 images, record 4 is 16x16"),
    ("2,112,112", r"says 112x112 images, record 4 is 16x16"),
])
def test_property_that_disagrees_with_the_records_is_refused(dataset_dir, text, match):
    (dataset_dir / "property").write_text(text)
    with pytest.raises(FormatError, match=match) as info:
        InsightFaceRecordDataset(str(dataset_dir))
    assert str(info.value).startswith(str(dataset_dir / "property"))
