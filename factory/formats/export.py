"""Any dataset the factory reads, written as insightface RecordIO or as an image folder.

Most face-recognition trainers (arcface_torch, AdaFace) read ``train.rec``/``train.idx``/
``property`` or ``root/<identity>/<n>.jpg``; :func:`export_dataset` writes either, from shards
(with the recognizer's metadata selection: m range, similarity range, mixup share), RecordIO or
an image folder. Images are copied as stored, never re-encoded, so every exported image is
byte-identical to its source; each is decoded before it is copied, so that only images are:
a file that is not one is refused with one line naming it, and the export stops there (a
rerun resumes once it is fixed). Readers refuse files that lie outside their folder before
anything is read (:mod:`factory.formats.confined`), and no export is written inside a
synthesised dataset, whose readers would take it for part of the dataset.

Layout of the output directory:

* ``rec``: ``train.rec``, ``train.idx``, ``property`` in insightface's layout (the header
  record at key 0, images at keys 1..N with their label in the record header, one identity
  record per class), written by :func:`~factory.formats.recordio.write_insightface_rec`;
* ``folder``: ``<label>/<n>.jpg`` (``.png`` for PNG sources), both zero-padded to a fixed width
  so that sorted names give back the exported labels and order;
* ``labels.json``: the image and class counts and, per exported label ``0..C-1``, the source
  label (the stored label for shards) and, for image-folder sources, the identity's name;
* ``metadata.jsonl``: one JSON object per image in export order: ``label``, ``source_label``,
  ``source_index``, where it lies (``record`` key or ``path``) and, for shards, the sample's
  ``key`` and its shard ``meta``;
* ``metadata.parquet``: the same rows as a table, for pandas, pyarrow, DuckDB or Ray Data:
  ``label``, ``source_label``, ``source_index``, ``record`` or ``path`` and, for shards, the
  source ``shard`` (its place in the source's shard list) and ``key`` and the columns a shard's
  own Parquet metadata takes from the sample's json
  (:data:`~factory.formats.shard_metadata.SAMPLE_COLUMNS`; the source's byte offsets are left
  out, they locate nothing here);
* ``export.json``: what this directory is an export of (format, source, selection), written
  first and checked by every rerun, with the code version that began it.
* ``.facefactory.lock``: only while an export writes here, which one (:mod:`factory.locking`):
  a second export into the same directory is refused before it reads or writes anything.

Labels are renumbered ``0..C-1`` in ascending order of the source label, every one used, and
images are ordered by label, then by source order: both follow from the source alone. Every
stored identity of a shard dataset is a class, identity-mixup ones included: RecordIO and
folders hold one hard label per image, so a mixed identity that training gives SynFace's soft
two-hot target (``mixup.labels: soft``) is exported as a class of its own, SynFace's
``new_class`` form, with its parents and phi in its ``meta`` in ``metadata.jsonl``.

Every file is written under a temporary name and renamed when complete, and ``metadata.jsonl``
is written last (after ``metadata.parquet``), so it marks a complete export: a rerun of a
complete export reads and writes nothing. A rerun after an interruption removes the
temporaries, keeps the image files a folder export had finished, and writes the rest, which
gives exactly the files of an uninterrupted run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast, get_args

import numpy as np
import pyarrow as pa
from pyarrow import fs as pafs
from tqdm import tqdm

from factory import storage
from factory.errors import FormatError, UserError
from factory.formats.dataset import FaceDataset, open_dataset
from factory.formats.images import decode_image
from factory.formats.recordio import MAX_EXACT_LABEL, write_insightface_rec
from factory.formats.shard_metadata import parquet_bytes, sample_columns
from factory.formats.shards import ShardDataset, refuse_inside_dataset
from factory.formats.space import export_bytes
from factory.locking import LOCK_FILE, hold_lock
from factory.provenance import code_version

ExportFormat = Literal["rec", "folder"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
EXPORT_FILE, LABELS_FILE, METADATA_FILE = "export.json", "labels.json", "metadata.jsonl"
METADATA_TABLE_FILE = "metadata.parquet"
_JPEG, _PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


class EncodedFaceDataset(FaceDataset, Protocol):
    """A :class:`FaceDataset` that also hands out each image's stored bytes and says where each
    lies (all three readers)."""

    def raw(self, index: int) -> bytes: ...

    def source(self, index: int) -> str: ...


@dataclass
class ExportResult:
    """What :func:`export_dataset` left in ``out``; ``already_complete`` when it wrote nothing."""

    out: str
    format: str
    images: int
    classes: int
    already_complete: bool
    reused_files: int = 0
    """Image files of an interrupted folder export that were kept, not rewritten."""


@dataclass
class _Plan:
    """The export order and labels: image ``i`` of the export is source index ``order[i]``."""

    order: np.ndarray
    labels: np.ndarray
    """Exported label of each image, in export order (non-decreasing, ``0..C-1``)."""
    source_labels: np.ndarray
    """Source label of each exported class, ascending."""

    @property
    def num_classes(self) -> int:
        return len(self.source_labels)


def export_dataset(source: str, out: str, format: ExportFormat,
                   m_range: tuple[float, float] | None = None,
                   similarity_range: tuple[float, float] | None = None,
                   mixup_share: float | None = None) -> ExportResult:
    """Export the dataset at ``source`` (selected as :func:`open_dataset` selects) to ``out``.

    :class:`UserError` (one line) for an unknown format, a missing source, an ``out`` that holds
    other files or another export, lies inside a synthesised dataset or is being written by
    another export (:mod:`factory.locking`), a selection that keeps nothing, or a source file
    that is not an image.
    """
    if format not in FORMATS:
        raise UserError(f"export format {format!r}: expected one of {', '.join(FORMATS)}")
    refuse_inside_dataset(out, "--out")
    if not storage.exists(source):
        raise FormatError(f"{source}: not found (expected a dataset: shards, RecordIO or an "
                          "image folder)")
    request = json.loads(json.dumps({  # as export.json holds it: tuples become lists
        "format": format, "source": source,
        "selection": {"m": m_range, "similarity": similarity_range, "mixup_share": mixup_share}}))
    with hold_lock(out, "export"):  # before an earlier export.json is read
        if _claimed(out, request):
            if storage.exists(storage.join(out, METADATA_FILE)):
                counts = json.loads(storage.read_text(storage.join(out, LABELS_FILE)))
                return ExportResult(out, format, counts["num_images"], counts["num_classes"], True)
        # every reader open_dataset returns has raw()
        dataset = cast(EncodedFaceDataset,
                       open_dataset(source, m_range, similarity_range, mixup_share))
        plan = _plan(dataset)
        if format == "rec" and len(plan.order) + plan.num_classes + 1 >= MAX_EXACT_LABEL:
            raise FormatError(f"{source}: {len(plan.order)} images and {plan.num_classes} classes "
                              "need RecordIO keys beyond 2**24, which float32 labels cannot hold "
                              "exactly; export a selection or use --format folder")
        storage.ensure_writable(out)
        if not storage.exists(storage.join(out, EXPORT_FILE)):
            storage.write_text(storage.join(out, EXPORT_FILE),
                               json.dumps({**request, "code_version": code_version()}, indent=2))
        _remove_temporaries(out)
        # refused now if the disk lacks the room; a disk that fills anyway names the room
        with storage.space_for(out, export_bytes(dataset, plan.order, plan.num_classes, format,
                                                 out),
                               f"{len(plan.order):,} images exported as {format}"):
            if format == "rec":
                locations, reused = _write_rec(dataset, plan, out), 0
            else:
                locations, reused = _write_folder(dataset, plan, out)
            storage.write_text(storage.join(out, LABELS_FILE), _labels_json(dataset, plan))
            storage.write_bytes(storage.join(out, METADATA_TABLE_FILE),
                                parquet_bytes(_metadata_table(dataset, plan, locations)))
            with storage.atomic_output(storage.join(out, METADATA_FILE)) as stream:
                for line in _metadata_lines(dataset, plan, locations):
                    stream.write(line.encode("utf-8"))
        return ExportResult(out, format, len(plan.order), plan.num_classes, False, reused)


def _claimed(out: str, request: dict[str, Any]) -> bool:
    """Whether ``out`` already holds an export of ``request``; UserError if it holds anything
    else (another export, or files that are not an export at all)."""
    uri = storage.join(out, EXPORT_FILE)
    if storage.exists(uri):
        previous = json.loads(storage.read_text(uri))
        changed = sorted(key for key in request if previous.get(key) != request[key])
        if changed:
            raise UserError(f"{out}: holds another export ({', '.join(changed)} differ); "
                            "choose another --out or remove it")
        return True
    if storage.is_dir(out) and any(not name.startswith(storage.TEMP_MARKER) and name != LOCK_FILE
                                   for name in storage.listdir(out)):
        raise UserError(f"{out}: exists and holds other files; choose a new or empty --out")
    return False


def _plan(dataset: FaceDataset) -> _Plan:
    """Contiguous labels in ascending source-label order; images by label, then source order."""
    stored = dataset.original_labels if isinstance(dataset, ShardDataset) else dataset.labels
    source_labels, relabelled = np.unique(np.asarray(stored), return_inverse=True)
    order = np.argsort(relabelled, kind="stable")
    return _Plan(order, relabelled[order].astype(np.int64), source_labels.astype(np.int64))


def _image_bytes(dataset: EncodedFaceDataset, index: int) -> bytes:
    """The stored bytes of image ``index``, once they have decoded as an image: an export copies
    images only, and a FormatError names any file that is not one."""
    data = dataset.raw(index)
    decode_image(data, dataset.source(index))
    return data


def _stored_images(dataset: EncodedFaceDataset, plan: _Plan) -> Iterator[tuple[int, bytes]]:
    """``(exported label, stored bytes)`` in export order, with a progress bar on a terminal."""
    for label, index in tqdm(zip(plan.labels, plan.order), total=len(plan.order),
                             desc="export", unit="image", disable=None):
        yield int(label), _image_bytes(dataset, int(index))


def _write_rec(dataset: EncodedFaceDataset, plan: _Plan, out: str) -> list[dict[str, Any]]:
    """``train.rec``/``train.idx``/``property``; returns each image's record key.

    ``property`` records the size of the first image: insightface's readers take it as the size
    of all (arcface_torch does not read it), and synthesised images share one size unless real
    inquiry copies of another size were included.
    """
    first = int(plan.order[0])
    height, width = decode_image(dataset.raw(first), dataset.source(first)).shape[:2]
    write_insightface_rec(out, _stored_images(dataset, plan), len(plan.order), plan.num_classes,
                          (height, width))
    return [{"record": key} for key in range(1, len(plan.order) + 1)]


def _write_folder(dataset: EncodedFaceDataset, plan: _Plan,
                  out: str) -> tuple[list[dict[str, Any]], int]:
    """``<label>/<n>.<ext>`` per image, keeping files a previous run finished; returns each
    image's path and how many files were kept."""
    counts = np.bincount(plan.labels, minlength=plan.num_classes)
    label_width = max(6, len(str(plan.num_classes - 1)))
    image_width = max(5, len(str(int(counts.max()) - 1)))
    finished = _finished_files(out)
    locations, reused, position = [], 0, 0
    for label in range(plan.num_classes):
        for number in range(int(counts[label])):
            stem = f"{label:0{label_width}d}/{number:0{image_width}d}"
            if stem in finished:
                reused += 1
                path = finished[stem]
            else:
                index = int(plan.order[position])
                data = _image_bytes(dataset, index)
                path = f"{stem}.{_extension(data, dataset.source(index))}"
                storage.write_bytes(storage.join(out, *path.split("/")), data)
            locations.append({"path": path})
            position += 1
    return locations, reused


def _extension(data: bytes, source: str) -> str:
    """``jpg`` or ``png``, by the stored bytes of the image at ``source``."""
    if data.startswith(_JPEG):
        return "jpg"
    if data.startswith(_PNG):
        return "png"
    raise FormatError(f"{source}: stored bytes are neither JPEG nor PNG, so the folder "
                      "export cannot name the file")


def _finished_files(out: str) -> dict[str, str]:
    """``{"<label>/<n>": "<label>/<n>.<ext>"}`` for the image files already under ``out``.

    One recursive listing (one request on object stores) rather than a check per image.
    """
    filesystem, root = storage.resolve(out)
    prefix = root.rstrip("/") + "/"
    finished = {}
    for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = info.path[len(prefix):]
        if info.type == pafs.FileType.File and relative.count("/") == 1 and \
                not relative.split("/")[1].startswith(storage.TEMP_MARKER):
            finished[relative.rsplit(".", 1)[0]] = relative
    return finished


def _remove_temporaries(out: str) -> None:
    """Delete the temporary files an interrupted export left, at the top and one level down."""
    filesystem, root = storage.resolve(out)
    for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type == pafs.FileType.File and info.base_name.startswith(storage.TEMP_MARKER):
            filesystem.delete_file(info.path)


def _labels_json(dataset: FaceDataset, plan: _Plan) -> str:
    names = getattr(dataset, "class_names", None)
    classes = []
    for label, source_label in enumerate(plan.source_labels.tolist()):
        entry: dict[str, Any] = {"label": label, "source_label": source_label}
        if names is not None:
            entry["name"] = names[source_label]
        classes.append(entry)
    return json.dumps({"num_images": len(plan.order), "num_classes": plan.num_classes,
                       "classes": classes}, indent=1)


def _metadata_lines(dataset: FaceDataset, plan: _Plan,
                    locations: list[dict[str, Any]]) -> Iterator[str]:
    """One JSON line per exported image, in export order."""
    shards = dataset if isinstance(dataset, ShardDataset) else None
    for label, index, location in zip(plan.labels.tolist(), plan.order.tolist(), locations):
        record: dict[str, Any] = {"label": label,
                                  "source_label": int(plan.source_labels[label]),
                                  "source_index": index, **location}
        if shards is not None:
            record["key"] = shards.keys[index]
            record["meta"] = shards.metadata[index]
        yield json.dumps(record, sort_keys=True, allow_nan=False) + "\n"


def _metadata_table(dataset: FaceDataset, plan: _Plan,
                    locations: list[dict[str, Any]]) -> pa.Table:
    """``metadata.jsonl``'s rows as a table (see the module doc), in export order."""
    order = plan.order.tolist()
    where = "record" if "record" in locations[0] else "path"
    columns = {"label": pa.array(plan.labels, pa.int64()),
               "source_label": pa.array(plan.source_labels[plan.labels], pa.int64()),
               "source_index": pa.array(order, pa.int64()),
               where: pa.array([location[where] for location in locations],
                               pa.int64() if where == "record" else pa.string())}
    if isinstance(dataset, ShardDataset):
        columns["shard"] = pa.array([dataset.shard_index(index) for index in order], pa.int32())
        columns["key"] = pa.array([dataset.keys[index] for index in order], pa.string())
        columns.update(sample_columns([dataset.metadata[index] for index in order],
                                      dataset.root_uri))
    return pa.table(columns)


def describe(result: ExportResult) -> str:
    """One line for the CLI: what is where, or that nothing needed doing."""
    files = ("train.rec, train.idx, property" if result.format == "rec"
             else "<label>/<n>.jpg")
    state = ("already complete, nothing written" if result.already_complete
             else f"{result.reused_files} image files kept from an interrupted run"
             if result.reused_files else "written")
    identities = "identity" if result.classes == 1 else "identities"
    return (f"export {result.out}: {result.images} images of {result.classes} {identities} as "
            f"{files}, with {LABELS_FILE}, {METADATA_FILE} and {METADATA_TABLE_FILE} ({state})")

