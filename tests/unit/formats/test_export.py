"""``factory export``: shards (or any dataset) to insightface RecordIO or an image folder, read
back by the project's readers and by an arcface_torch-style reader written here from the
published layout; selection, metadata, atomic resume, and one-line errors."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

from factory.cli import main
from factory.errors import FormatError, UserError
from factory.formats import export as export_module
from factory.formats.dataset import open_dataset
from factory.formats.export import METADATA_FILE, export_dataset
from factory.formats.image_folder import ImageFolderDataset
from factory.formats.images import decode_image, encode_jpeg, encode_png
from factory.formats.recordio import InsightFaceRecordDataset
from factory.formats.shards import ShardDataset, ShardSample, shard_name, write_shard

STORED_LABELS = [30, 10, 20, 30, 10, 20, 30, 10, 20]  # sample i has STORED_LABELS[i]
M_VALUES = [0.0, 0.3, 0.6]  # sample i has m = M_VALUES[i % 3]


def _samples(indices) -> list[ShardSample]:
    rng = np.random.default_rng(list(indices))
    return [ShardSample(f"{index:06d}", encode_jpeg(rng.integers(0, 256, (16, 12, 3), np.uint8)),
                        STORED_LABELS[index],
                        {"label": STORED_LABELS[index], "inquiry": f"real-{index}",
                         "m": M_VALUES[index % 3], "similarity_inquiry": 0.5,
                         "similarity_center": index / 10, "seed": index,
                         "mixup": {"partner": "p", "phi": 0.5} if STORED_LABELS[index] == 20
                         else None, "generator": "test", "sampler": "ddim", "steps": 2})
            for index in indices]


@pytest.fixture
def shards(tmp_path):
    """Two shards of 9 samples, stored labels 10, 20, 30 interleaved, 16x12 JPEGs."""
    root = tmp_path / "synthetic"
    write_shard(str(root / "shards" / shard_name(0)), _samples(range(5)))
    write_shard(str(root / "shards" / shard_name(1)), _samples(range(5, 9)))
    return root


def _export_order(source: ShardDataset) -> list[int]:
    """Source indices in the order an export writes them: by label, then source order."""
    return sorted(range(len(source)), key=lambda index: (source.labels[index], index))


def run_main(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line_error(code, err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0]


def _files(root) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def test_rec_export_reads_back_to_the_same_images_and_labels(shards, tmp_path):
    out = tmp_path / "rec"
    result = export_dataset(str(shards), str(out), "rec")
    assert (result.images, result.classes, result.already_complete) == (9, 3, False)
    source, exported = ShardDataset(str(shards)), open_dataset(str(out))
    assert isinstance(exported, InsightFaceRecordDataset)
    assert exported.num_classes == 3 and (out / "property").read_text() == "3,16,12"
    order = _export_order(source)
    assert exported.labels.tolist() == [source.labels[index] for index in order] \
        == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for position, index in enumerate(order):
        assert exported.raw(position) == source.raw(index)
        np.testing.assert_array_equal(exported.image(position), source.image(index))


def _arcface_records(out) -> dict[int, tuple[tuple[float, ...], bytes]]:
    """Every record of ``train.rec`` by key, parsed as mxnet's ``MXIndexedRecordIO`` +
    ``recordio.unpack`` do (from the published layout: magic, cflag/length, IRHeader
    ``IfQQ``, ``flag`` float32 labels, data; a record split at a magic is re-joined by it)."""
    rec = (out / "train.rec").read_bytes()
    records = {}
    for line in (out / "train.idx").read_text().splitlines():
        key, offset = (int(field) for field in line.split("\t"))
        parts = []
        while True:
            magic, lrec = struct.unpack_from("<II", rec, offset)
            assert magic == 0xCED7230A
            cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            parts.append(rec[offset + 8:offset + 8 + length])
            offset += 8 + length + (-length % 4)
            if cflag in (0, 3):
                break
        payload = struct.pack("<I", 0xCED7230A).join(parts)
        flag, label, _, _ = struct.unpack_from("<IfQQ", payload)
        labels = struct.unpack_from(f"<{flag}f", payload, 24) if flag else (label,)
        records[key] = (labels, payload[24 + 4 * flag:])
    return records


def test_an_arcface_style_reader_sees_the_classes_and_images(shards, tmp_path):
    """arcface_torch's MXFaceDataset: record 0 with flag > 0 gives (a, b); the images are keys
    1 .. a-1, each labelled by its header's first label; keys a .. b-1 are the identities."""
    out = tmp_path / "rec"
    export_dataset(str(shards), str(out), "rec")
    records = _arcface_records(out)
    header_labels, _ = records[0]
    first_identity, end = int(header_labels[0]), int(header_labels[1])
    assert first_identity == 9 + 1
    image_keys = range(1, first_identity)
    labels = [int(records[key][0][0]) for key in image_keys]
    num_classes = end - first_identity
    assert num_classes == 3 == len(set(labels)) == int((out / "property").read_text()[0])
    source = ShardDataset(str(shards))
    order = _export_order(source)
    for key, index in zip(image_keys, order):
        assert records[key][1] == source.raw(index)
        assert int(records[key][0][0]) == source.labels[index]
    identity_ranges = [tuple(int(v) for v in records[key][0]) for key in range(first_identity, end)]
    assert identity_ranges == [(1, 4), (4, 7), (7, 10)]


def test_folder_export_reads_back_to_the_same_images_and_labels(shards, tmp_path):
    out = tmp_path / "folder"
    export_dataset(str(shards), str(out), "folder")
    exported, source = ImageFolderDataset(str(out)), ShardDataset(str(shards))
    assert exported.class_names == ["000000", "000001", "000002"]
    assert sorted(os.listdir(out / "000001")) == ["00000.jpg", "00001.jpg", "00002.jpg"]
    order = _export_order(source)
    assert exported.labels.tolist() == [source.labels[index] for index in order]
    for position, index in enumerate(order):
        assert exported.raw(position) == source.raw(index)


def test_labels_and_metadata_record_the_mapping_and_every_sample(shards, tmp_path):
    out = tmp_path / "rec"
    export_dataset(str(shards), str(out), "rec")
    labels = json.loads((out / "labels.json").read_text())
    assert labels == {"num_images": 9, "num_classes": 3, "classes": [
        {"label": 0, "source_label": 10}, {"label": 1, "source_label": 20},
        {"label": 2, "source_label": 30}]}
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    source = ShardDataset(str(shards))
    assert [row["record"] for row in rows] == list(range(1, 10))
    for row, index in zip(rows, _export_order(source)):
        assert row["source_index"] == index and row["key"] == source.keys[index]
        assert row["meta"] == source.metadata[index]
        assert row["source_label"] == row["meta"]["label"] == STORED_LABELS[int(row["key"])]
        assert labels["classes"][row["label"]]["source_label"] == row["source_label"]


def test_selection_is_the_recognizers_and_labels_stay_contiguous(shards, tmp_path):
    out = tmp_path / "selected"
    result = export_dataset(str(shards), str(out), "folder", m_range=(0.3, 0.6),
                            similarity_range=(0.0, 0.7))
    selected = ShardDataset(str(shards), m_range=(0.3, 0.6), similarity_range=(0.0, 0.7))
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert result.images == len(selected) == len(rows) == 5
    assert sorted(row["key"] for row in rows) == sorted(selected.keys)
    assert all(0.3 <= row["meta"]["m"] <= 0.6 for row in rows)
    assert ImageFolderDataset(str(out)).labels.tolist() == sorted(selected.labels.tolist())
    assert sorted({row["label"] for row in rows}) == list(range(result.classes))

    mixup = export_dataset(str(shards), str(tmp_path / "mixup"), "rec", mixup_share=0.5)
    kept = ShardDataset(str(shards), mixup_share=0.5)
    assert (mixup.images, mixup.classes) == (len(kept), kept.num_classes) == (6, 2)


def test_a_soft_labelled_mixup_identity_is_a_class_of_its_own(tmp_path):
    """Training gives its samples two-hot targets over the parents' classes; an export can
    hold one hard label, so the mixed identity is its own class and its parents are recorded."""
    rng = np.random.default_rng(0)
    soft = {"partner": "real-1", "phi": 0.3, "parents": [0, 1], "labels": "soft"}
    write_shard(str(tmp_path / "synthetic" / "shards" / shard_name(0)), [
        ShardSample(f"{label}{index}", encode_jpeg(rng.integers(0, 256, (8, 8, 3), np.uint8)),
                    label, {"label": label, "m": 0.5, "similarity_center": 0.5,
                            "mixup": soft if label == 2 else None})
        for label in (0, 1, 2) for index in range(2)])
    source = ShardDataset(str(tmp_path / "synthetic"))
    assert source.num_classes == 2 and source.targets(4) == ((0, 1), (0.3, 0.7))
    out = tmp_path / "rec"
    assert export_dataset(str(tmp_path / "synthetic"), str(out), "rec").classes == 3
    assert InsightFaceRecordDataset(str(out)).labels.tolist() == [0, 0, 1, 1, 2, 2]
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [row["meta"]["mixup"] for row in rows[4:]] == [soft, soft]


def test_other_sources_export_too_with_names_and_png_kept(tmp_path):
    source = tmp_path / "faces"
    for name, data in {"zoe/a.jpg": encode_jpeg(np.full((8, 8, 3), 10, np.uint8)),
                       "adam/b.png": encode_png(np.full((8, 8, 3), 200, np.uint8)),
                       "adam/a.jpg": encode_jpeg(np.full((8, 8, 3), 90, np.uint8))}.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    export_dataset(str(source), str(tmp_path / "folder"), "folder")
    assert (tmp_path / "folder" / "000000" / "00001.png").read_bytes() == \
        (source / "adam" / "b.png").read_bytes()
    export_dataset(str(tmp_path / "folder"), str(tmp_path / "rec"), "rec")
    rec = InsightFaceRecordDataset(str(tmp_path / "rec"))
    assert rec.labels.tolist() == [0, 0, 1]
    assert rec.raw(2) == (source / "zoe" / "a.jpg").read_bytes()
    classes = json.loads((tmp_path / "folder" / "labels.json").read_text())["classes"]
    assert [entry["name"] for entry in classes] == ["adam", "zoe"]


def test_a_rerun_of_a_complete_export_reads_and_writes_nothing(shards, tmp_path, monkeypatch):
    out = tmp_path / "rec"
    export_dataset(str(shards), str(out), "rec")
    before = {path: os.stat(path).st_mtime_ns for path in out.rglob("*")}

    def never_opened(*args, **kwargs):
        raise AssertionError("the source was opened again")

    monkeypatch.setattr(export_module, "open_dataset", never_opened)
    result = export_dataset(str(shards), str(out), "rec")
    assert result.already_complete and (result.images, result.classes) == (9, 3)
    assert {path: os.stat(path).st_mtime_ns for path in out.rglob("*")} == before


@pytest.mark.parametrize("format", ["rec", "folder"])
def test_a_rerun_after_an_interruption_gives_exactly_the_same_files(shards, tmp_path,
                                                                    monkeypatch, format):
    clean = tmp_path / "clean"
    export_dataset(str(shards), str(clean), format)
    original_raw, calls = ShardDataset.raw, []

    def interrupted_raw(self, index):
        calls.append(index)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return original_raw(self, index)

    monkeypatch.setattr(ShardDataset, "raw", interrupted_raw)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        export_dataset(str(shards), str(out), format)
    assert not (out / "metadata.jsonl").exists() and not (out / "train.rec").exists()
    # a temporary that a hard kill (not an exception) would leave behind
    (out / ".tmp-0000-labels.json").write_text("half")
    monkeypatch.setattr(ShardDataset, "raw", original_raw)
    result = export_dataset(str(shards), str(out), format)
    assert _files(out) == _files(clean)
    assert result.reused_files == (5 if format == "folder" else 0)  # 5 written, the 6th failed


def test_out_holding_other_files_or_another_export_is_refused(shards, tmp_path):
    with pytest.raises(UserError, match="holds other files"):
        export_dataset(str(shards), str(shards), "rec")
    out = tmp_path / "rec"
    export_dataset(str(shards), str(out), "rec")
    with pytest.raises(UserError, match=r"another export \(format, selection differ\)"):
        export_dataset(str(shards), str(out), "folder", m_range=(0.0, 0.3))


def test_keys_beyond_float32_labels_are_refused_before_writing(shards, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "MAX_EXACT_LABEL", 12)  # 9 images + 3 classes + header
    with pytest.raises(FormatError, match="2\\*\\*24"):
        export_dataset(str(shards), str(tmp_path / "rec"), "rec")
    assert not (tmp_path / "rec").exists()


def test_cli_export_with_a_selection(shards, tmp_path, capsys):
    out = tmp_path / "rec"
    assert main(["export", str(shards), "--format", "rec", "--out", str(out),
                 "--m", "0.3", "0.6", "--mixup-share", "0"]) == 0
    printed = capsys.readouterr().out
    # m 0.3 or 0.6: stored labels 10, 20 (mixup), 10, 20, 10, 20; no mixup: only 10 is left
    assert f"export {out}: 3 images of 1 identity" in printed
    assert InsightFaceRecordDataset(str(out)).num_classes == 1
    assert main(["export", str(shards), "--format", "rec", "--out", str(out), "--m", "0.3",
                 "0.6", "--mixup-share", "0"]) == 0
    assert "already complete" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needles", [
    (["export", "{tmp}/absent", "--format", "rec", "--out", "{tmp}/out"],
     ["{tmp}/absent", "not found"]),
    (["export", "{shards}", "--format", "lmdb", "--out", "{tmp}/out"],
     ["'lmdb'", "rec, folder"]),
    (["export", "{shards}", "--format", "rec", "--out", "{tmp}/out", "--m", "0.9", "0.1"],
     ["--m", "LOW <= HIGH"]),
    (["export", "{shards}", "--format", "rec", "--out", "{tmp}/out", "--mixup-share", "2"],
     ["mixup_share", "less than or equal to 1"]),
    (["export", "{shards}", "--format", "rec", "--out", "{tmp}/out", "--m", "5", "6"],
     ["no sample has m in [5.0, 6.0]"]),
])
def test_cli_bad_input_is_one_line_and_exit_2(shards, tmp_path, capsys, argv, needles):
    def fill(text):
        return text.format(tmp=tmp_path, shards=shards)

    code, err = run_main(capsys, *map(fill, argv))
    assert_one_line_error(code, err, *map(fill, needles))
    assert not (tmp_path / "out").exists()


def test_a_selection_of_a_recordio_source_is_one_line(shards, tmp_path, capsys):
    export_dataset(str(shards), str(tmp_path / "rec"), "rec")
    code, err = run_main(capsys, "export", str(tmp_path / "rec"), "--format", "folder",
                         "--out", str(tmp_path / "out"), "--m", "0.3")
    assert_one_line_error(code, err, "needs a synthesised dataset of shards")


def test_decoded_pixels_survive_the_folder_round_trip(shards, tmp_path):
    """Decoding the exported files gives the source's pixels (no re-encoding anywhere)."""
    out = tmp_path / "folder"
    export_dataset(str(shards), str(out), "folder")
    source = ShardDataset(str(shards))
    first = _export_order(source)[0]
    np.testing.assert_array_equal(
        decode_image((out / "000000" / "00000.jpg").read_bytes()), source.image(first))


def _faces_with(tmp_path, name: str) -> tuple:
    """An image folder ``faces/000001/a.jpg`` plus ``faces/000001/<name>``, and a secret text
    file outside it (returned with the folder)."""
    faces, secret = tmp_path / "faces", tmp_path / "secret.txt"
    (faces / "000001").mkdir(parents=True)
    (faces / "000001" / "a.jpg").write_bytes(encode_jpeg(np.full((8, 8, 3), 50, np.uint8)))
    secret.write_bytes(b"TOP SECRET: do not copy")
    return faces, secret, faces / "000001" / name


def _holds_the_secret(root) -> list[str]:
    return [name for name, data in _files(root).items() if b"TOP SECRET" in data]


@pytest.mark.parametrize("format", ["rec", "folder"])
def test_a_link_out_of_the_source_folder_is_refused_before_writing(tmp_path, capsys, format):
    faces, secret, leak = _faces_with(tmp_path, "zz_leak.jpg")
    leak.symlink_to(secret)
    code, err = run_main(capsys, "export", str(faces), "--format", format,
                         "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, f"{leak}: refused, a link to {secret}", "outside")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("format", ["rec", "folder"])
def test_a_file_that_is_not_an_image_is_refused_naming_it(tmp_path, capsys, format):
    """Every copied image is decoded first: bytes that only start like a JPEG are not copied."""
    faces, _, junk = _faces_with(tmp_path, "zz_text.jpg")
    junk.write_bytes(b"\xff\xd8\xff TOP SECRET: not an image")
    code, err = run_main(capsys, "export", str(faces), "--format", format,
                         "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, f"{junk}: expected an encoded image", "could not decode")
    assert _holds_the_secret(tmp_path / "out") == []
    assert not (tmp_path / "out" / METADATA_FILE).exists()


@pytest.mark.parametrize("inside", ["shards/shard-000002.tar", "report/export"])
def test_an_out_inside_a_synthesised_dataset_is_refused(shards, tmp_path, capsys, inside):
    out = shards / inside
    code, err = run_main(capsys, "export", str(shards), "--format", "rec", "--out", str(out))
    assert_one_line_error(code, err, f"--out {out}: lies inside the synthesised dataset "
                                     f"{shards} (it holds shards/)")
    assert not out.exists() and len(ShardDataset(str(shards))) == 9
