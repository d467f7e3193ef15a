"""Synthesised face datasets as WebDataset shards: writing one shard, reading shards back.

Layout of a dataset directory (any URI):

* ``manifest.json``: written by the synthesis stage; its ``shards`` list, not a listing of
  the folder, is what the readers here read (:func:`listed_shard_uris`), so that a file
  dropped into ``shards/`` is never read as part of the dataset (``factory verify`` reports
  it);
* ``shards/shard-000000.tar``, ``shards/shard-000001.tar``, ...: POSIX (ustar) tars in the
  WebDataset convention, so ``webdataset.WebDataset(".../shard-{000000..000099}.tar")`` and
  ``ray.data.read_webdataset(".../shards", file_extensions=["tar"])`` read them as well as
  :class:`ShardDataset` does;
* ``shards/shard-000000.parquet`` ...: beside each tar, its samples' metadata, one row per
  sample, written by the stages that write shards (:mod:`factory.formats.shard_metadata`);
  :func:`write_shard` hands them each sample as located in the tar it wrote.

Each sample is three consecutive members sharing one key (no dots, no slashes, unique within
its shard), in this order:

* ``{key}.cls``: the class label as an ASCII decimal integer;
* ``{key}.jpg``: the face, JPEG bytes;
* ``{key}.json``: a UTF-8 JSON object with at least ``label`` (int), ``inquiry`` (str), ``m``
  (float, the requested similarity), ``similarity_inquiry`` and ``similarity_center`` (floats),
  ``seed`` (int), ``mixup`` (null or ``{"partner": str, "phi": float, "parents": [int, int],
  "labels": "soft" | "new_class"}``), ``generator``, ``sampler`` (str) and ``steps`` (int).
  ``m`` and ``similarity_center`` are interpreted here to select samples, and ``mixup`` to give
  SynFace's soft labels; the whole object is passed through.

Shards are built in memory with fixed member metadata (mtime 0, uid/gid 0, no user or group
names, mode 0644) and JSON with sorted keys, so identical samples give byte-identical shards,
and are written under a temporary name and renamed, so a crash never leaves half a shard under
a final name. Readers refuse any member that could escape a directory if extracted (absolute,
``..``, any ``/``) or that is not a regular file, and any tar that ends before its end-of-archive
marker: ``tarfile`` would otherwise read a truncated shard as a shorter valid one. A shard
that is a link out of the dataset's folder is refused before it is opened
(:mod:`factory.formats.confined`), and nothing may be written inside a dataset's folder by
another stage (:func:`refuse_inside_dataset`).
"""

from __future__ import annotations

import hashlib
import io
import json
import operator
import os
import posixpath
import re
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from factory import storage
from factory.errors import FormatError, UserError
from factory.formats.confined import ConfinedFolder
from factory.formats.images import decode_image

SHARD_DIR = "shards"
MANIFEST_FILE = "manifest.json"
"""What a reader reads a synthesised dataset's shard list from (written by synthesis)."""
_MEMBER_MODE = 0o644
_END_OF_ARCHIVE = b"\0" * (2 * tarfile.BLOCKSIZE)
_DECIMAL = re.compile(r"[0-9]{1,18}")
"""A ``.cls`` label: a decimal integer that fits int64 (labels are renumbered when read)."""
_SHARD_NAME = re.compile(r"shard-[0-9]{6}\.tar")


def shard_name(index: int) -> str:
    """The file name of shard ``index``: ``shard-000042.tar``."""
    return "shard-%06d.tar" % index


def shard_pattern(count: int) -> str:
    """The brace pattern WebDataset readers expand to ``count`` shards:
    ``shard-{000000..000041}.tar`` for 42."""
    if count < 1:
        raise ValueError(f"need at least one shard, got count={count}")
    return "shard-{000000..%06d}.tar" % (count - 1)


class LocatedSample(NamedTuple):
    """A sample as a reader finds it in its shard: key, stored label (``.cls``), metadata
    (``.json``), and where its JPEG's data lies in the tar (byte offset and size)."""

    key: str
    label: int
    meta: dict
    offset: int
    size: int


@dataclass
class ShardSample:
    """One sample to write: its key, JPEG bytes, class label and JSON metadata."""

    key: str
    jpg: bytes
    label: int
    meta: dict


@dataclass
class ShardWritten:
    """What :func:`write_shard` wrote: sample count, sha256 (hex) and size of the tar, and each
    sample as a reader locates it (what the shard's Parquet metadata is built from)."""

    count: int
    sha256: str
    size_bytes: int
    located: list[LocatedSample]


def write_shard(uri: str, samples: Sequence[ShardSample]) -> ShardWritten:
    """Write ``samples`` as one tar at ``uri``, replacing any file there atomically.

    ValueError, before anything is written, for a key that is empty, holds a ``.`` or ``/`` or
    repeats within the shard, for a negative label or one of more than 18 digits, or for
    metadata that is not strict JSON (NaN, infinity); TypeError for a label that is not an int
    or metadata JSON cannot hold.
    """
    _check_samples(samples)
    data, offsets = _tar_bytes(samples)
    storage.write_bytes(uri, data)
    located = [LocatedSample(sample.key, operator.index(sample.label), sample.meta, offset,
                             len(sample.jpg)) for sample, offset in zip(samples, offsets)]
    return ShardWritten(len(samples), hashlib.sha256(data).hexdigest(), len(data), located)


def shard_damage(uri: str, size_bytes: int | None, sha256: str | None) -> str | None:
    """Why the shard file at ``uri`` is not the one recorded (missing, another size, another
    sha256), or None when it is. The size comes from file metadata; the hash, only checked
    when one was recorded, reads the file once."""
    size = storage.file_size(uri)
    if size is None:
        return "missing"
    if size_bytes is not None and size != size_bytes:
        return f"{size} bytes, expected {size_bytes}"
    return None if sha256 is None else sha256_damage(storage.file_sha256(uri), sha256)


def sha256_damage(found: str, recorded: str) -> str | None:
    """Why a shard whose sha256 is ``found`` is not the one recorded; None when it is."""
    return None if found == recorded else f"sha256 differs from the recorded {recorded[:12]}.."


def _check_samples(samples: Sequence[ShardSample]) -> None:
    """ValueError for a bad or repeated key or a label out of range; TypeError for a non-int
    label."""
    seen: set[str] = set()
    for sample in samples:
        if not sample.key or "." in sample.key or "/" in sample.key:
            raise ValueError(f"shard key {sample.key!r}: expected a non-empty key without "
                             "'.' or '/'")
        if sample.key in seen:
            raise ValueError(f"shard key {sample.key!r} appears twice in one shard")
        if not 0 <= operator.index(sample.label) < 10**18:
            raise ValueError(f"shard key {sample.key!r}: label {sample.label} is negative or "
                             "has more than 18 digits")
        seen.add(sample.key)


def _tar_bytes(samples: Sequence[ShardSample]) -> tuple[bytes, list[int]]:
    """The shard as bytes, and where each sample's ``.jpg`` data begins in them; the same
    samples always give the same bytes."""
    buffer = io.BytesIO()
    jpg_offsets = []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            meta = json.dumps(sample.meta, sort_keys=True, allow_nan=False)
            members = (("cls", str(operator.index(sample.label)).encode("ascii")),
                       ("jpg", sample.jpg),
                       ("json", meta.encode("utf-8")))
            for extension, data in members:
                info = tarfile.TarInfo(f"{sample.key}.{extension}")
                info.size, info.mtime, info.mode = len(data), 0, _MEMBER_MODE
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                header = tar.offset
                tar.addfile(info, io.BytesIO(data))
                if extension == "jpg":  # the header block(s) first, then the data
                    jpg_offsets.append(header + len(info.tobuf(tarfile.USTAR_FORMAT)))
    return buffer.getvalue(), jpg_offsets


@dataclass
class ShardScan:
    """A shard as the readers see it (:func:`scan_shard`)."""

    count: int
    """Samples, each with its ``.jpg`` and ``.cls``."""
    real_images: int
    """Samples whose json marks them ``real`` (inquiry images copied in)."""
    labels: set[int]
    sha256: str
    """Of the whole file."""
    samples: list[LocatedSample]
    """Every sample, in tar order, as :class:`ShardDataset` locates it."""


def scan_shard(uri: str) -> ShardScan:
    """Read the shard at ``uri`` once, as :class:`ShardDataset` reads it (FormatError for all
    it refuses), hashing the file on the way: ``factory verify`` compares what readers get
    with the manifest and the shard's Parquet metadata without reading any shard twice."""
    digest = hashlib.sha256()
    samples = list(_locate(uri, digest))
    return ShardScan(len(samples), sum(bool(sample.meta.get("real")) for sample in samples),
                     {sample.label for sample in samples}, digest.hexdigest(), samples)


class _Digesting:
    """A stream that feeds every byte read through it to ``digest``."""

    def __init__(self, stream: Any, digest: Any) -> None:
        self.stream, self.digest = stream, digest

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data


@dataclass
class _Member:
    """A member of one sample: where its data lies in the tar, and the data if it was read."""

    offset: int
    size: int
    data: bytes | None


def _samples(uri: str, read: Callable[[str], bool],
             digest: Any = None) -> Iterator[tuple[str, dict[str, _Member]]]:
    """``(key, {extension: member})`` per sample of the shard at ``uri``, streamed in tar order.

    The data of members whose extension ``read`` accepts is read, the rest only located. Every
    member name is checked before anything else happens with it; FormatError names the shard.
    With ``digest`` (a hashlib object), every byte of the file is fed to it, in one read.
    """
    with storage.open_input(uri) as stream:
        try:
            source = stream if digest is None else _Digesting(stream, digest)
            with tarfile.open(fileobj=source, mode="r|") as tar:
                yield from _grouped(uri, tar, read)
                end = tar.offset
        except (tarfile.TarError, EOFError) as exc:
            raise FormatError(f"{uri}: not a readable tar ({exc}); truncated or corrupt shard?") \
                from None
        digested = stream.tell()  # the bytes fed to digest, if any, end here
        stream.seek(end)
        if stream.read(len(_END_OF_ARCHIVE)) != _END_OF_ARCHIVE:
            raise FormatError(f"{uri}: expected the tar end-of-archive marker at offset {end}, "
                              "found other data or the end of the file; truncated or corrupt "
                              "shard?")
        if digest is not None:
            stream.seek(digested)
            for chunk in iter(lambda: stream.read(1 << 22), b""):
                digest.update(chunk)


def _grouped(uri: str, tar: tarfile.TarFile,
             read: Callable[[str], bool]) -> Iterator[tuple[str, dict[str, _Member]]]:
    """Consecutive members of ``tar`` grouped by key; a key may not come back later."""
    key, members = "", {}
    finished: set[str] = set()
    for info in tar:
        member_key, extension = _split_name(uri, info)
        if member_key != key:
            if members:
                yield key, members
                finished.add(key)
            if member_key in finished:
                raise FormatError(f"{uri}: member {info.name!r}: key {member_key!r} appears "
                                  "again after other keys; a sample's members must be "
                                  "consecutive")
            key, members = member_key, {}
        if extension in members:
            raise FormatError(f"{uri}: member {info.name!r} appears twice")
        data = _read_member(tar, info) if read(extension) else None
        members[extension] = _Member(info.offset_data, info.size, data)
    if members:
        yield key, members


def _split_name(uri: str, info: tarfile.TarInfo) -> tuple[str, str]:
    """``(key, extension)`` of a member; FormatError for anything but a flat regular file."""
    name = info.name
    if "/" in name or name == "..":
        raise FormatError(f"{uri}: member {name!r}: refused, shard members must be plain "
                          "names '{key}.{extension}' (no '/', no '..', not absolute)")
    if not info.isreg() or info.issparse():
        raise FormatError(f"{uri}: member {name!r}: refused, not a regular file "
                          "(link, directory, device or sparse file)")
    key, dot, extension = name.partition(".")
    if not key or not dot or not extension:
        raise FormatError(f"{uri}: member {name!r}: expected a name '{{key}}.{{extension}}'")
    return key, extension


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    file = tar.extractfile(info)
    assert file is not None  # extractfile returns None only for non-regular members
    return file.read()


def iter_shard(uri: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard, in order, as WebDataset-style dicts.

    Each dict holds ``__key__``, ``jpg`` (bytes), ``cls`` (int) and ``json`` (dict) when those
    members are present, and any other member as bytes under its extension. FormatError for an
    unsafe member name, a corrupt or truncated tar, a non-integer ``.cls`` or a ``.json`` that is
    not a JSON object.
    """
    for key, members in _samples(uri, read=lambda extension: True):
        sample: dict[str, Any] = {"__key__": key}
        for extension, member in members.items():
            data = member.data or b""
            if extension == "cls":
                sample[extension] = _parse_label(uri, key, data)
            elif extension == "json":
                sample[extension] = _parse_meta(uri, key, data)
            else:
                sample[extension] = data
        yield sample


def _parse_label(uri: str, key: str, data: bytes) -> int:
    text = data.decode("ascii", errors="replace").strip()
    if not _DECIMAL.fullmatch(text):
        raise FormatError(f"{uri}: member '{key}.cls': expected a decimal integer label of at "
                          f"most 18 digits, found {text[:40]!r}")
    return int(text)


def _parse_meta(uri: str, key: str, data: bytes) -> dict:
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        meta = None
    if not isinstance(meta, dict):
        raise FormatError(f"{uri}: member '{key}.json': expected a UTF-8 JSON object")
    return meta


class ShardDataset:
    """The shards of a synthesised dataset as a :class:`~factory.formats.dataset.FaceDataset`.

    Opening scans every shard once, reading the small ``.cls`` and ``.json`` members and only
    locating each ``.jpg``; :meth:`image` then reads one JPEG at its byte offset. ``m_range``
    and ``similarity_range`` keep only samples whose ``m`` / ``similarity_center`` lie within
    (inclusive; None keeps all); ``mixup_share`` then keeps identities so that those made by
    identity mixup (json ``mixup`` set) are that share of them. The shards read are those the
    dataset's ``manifest.json`` lists; a dataset without one (a synthesis still running, shards
    written by other tools) is read as every ``shards/*.tar``.

    Classes. A mixed identity labelled ``soft`` whose two parents both survive the selection is
    not a class: :meth:`targets` gives its samples SynFace's two-hot target (phi on the first
    parent's class, 1 - phi on the second's) and ``labels`` the heavier parent's class. Every
    other identity is a class; classes are renumbered ``0 .. num_classes-1`` in ascending order
    of the stored label. ``original_labels``, ``metadata`` (the JSON objects) and ``keys`` are
    aligned with the indices. Picklable: copies reopen shards lazily in their
    own process. At most ``max_open_shards`` files stay open per process (the least recently
    read is dropped first), so a million-image set of a thousand shards stays under the usual
    open-file limit in every DataLoader worker.
    """

    max_open_shards = 64

    def __init__(self, root_uri: str, m_range: tuple[float, float] | None = None,
                 similarity_range: tuple[float, float] | None = None,
                 mixup_share: float | None = None) -> None:
        self.root_uri = root_uri
        self.shard_uris = _shard_uris(root_uri)
        kept: list[tuple[int, LocatedSample]] = []
        for shard, uri in enumerate(self.shard_uris):
            kept += [(shard, sample) for sample in _locate(uri)
                     if _within(uri, sample, "m", m_range)
                     and _within(uri, sample, "similarity_center", similarity_range)]
        if mixup_share is not None:
            kept = _with_mixup_share(kept, mixup_share)
        if not kept:
            share = "" if mixup_share is None else f" at mixup share {mixup_share}"
            raise FormatError(f"{storage.join(root_uri, SHARD_DIR)}: no sample has m in "
                              f"{_describe(m_range)} and similarity_center in "
                              f"{_describe(similarity_range)}{share}")
        self.keys = [sample.key for _, sample in kept]
        self.metadata = [sample.meta for _, sample in kept]
        self._shards = np.array([shard for shard, _ in kept], dtype=np.int32)
        self._offsets = np.array([sample.offset for _, sample in kept], dtype=np.int64)
        self._sizes = np.array([sample.size for _, sample in kept], dtype=np.int64)
        self.original_labels = np.array([sample.label for _, sample in kept], dtype=np.int64)
        soft = _soft_parents(self.metadata, self.original_labels)
        own_class = np.array([index not in soft for index in range(len(kept))], dtype=bool)
        classes = np.unique(self.original_labels[own_class])
        relabel = {int(label): index for index, label in enumerate(classes)}
        self._soft = {index: ((relabel[first], relabel[second]), (phi, 1.0 - phi))
                      for index, (first, second, phi) in soft.items()}
        self.labels = np.array([
            relabel[int(label)] if index not in soft
            else self._soft[index][0][0 if self._soft[index][1][0] >= 0.5 else 1]
            for index, label in enumerate(self.original_labels)], dtype=np.int64)
        self.num_classes = len(classes)
        self._handles: OrderedDict[int, Any] = OrderedDict()
        self._pid = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": OrderedDict(), "_pid": 0}

    def targets(self, index: int) -> tuple[tuple[int, int], tuple[float, float]]:
        """Sample ``index``'s two training targets and their weights: SynFace's two-hot label
        for a soft-labelled mixed identity, ``((y, y), (1, 0))`` for every other sample."""
        label = int(self.labels[index])
        return self._soft.get(index, ((label, label), (1.0, 0.0)))

    def raw(self, index: int) -> bytes:
        """The JPEG bytes of sample ``index``."""
        shard = int(self._shards[index])
        size = int(self._sizes[index])
        data = self._handle(shard).read_at(size, int(self._offsets[index]))
        if len(data) != size:
            raise FormatError(f"{self.shard_uris[shard]}: sample {self.keys[index]!r}: expected "
                              f"{size} bytes, the file ends after {len(data)} (changed since "
                              "it was opened?)")
        return data

    def stored_size(self, index: int) -> int:
        """The bytes of sample ``index``'s JPEG, as its shard's index gave them (not read)."""
        return int(self._sizes[index])

    def shard_index(self, index: int) -> int:
        """Which of :attr:`shard_uris` sample ``index`` lies in."""
        return int(self._shards[index])

    def source(self, index: int) -> str:
        """Where sample ``index``'s JPEG lies, as errors name it: its shard and member."""
        return f"{self.shard_uris[int(self._shards[index])]}: sample {self.keys[index]}.jpg"

    def image(self, index: int) -> np.ndarray:
        """Sample ``index`` decoded to HxWx3 uint8 RGB."""
        return decode_image(self.raw(index), source=self.source(index))

    def _handle(self, shard: int) -> Any:
        """The open file of ``shard`` in this process, opened on first use.

        Handles inherited through fork are not reused: pyarrow filesystem clients do not
        survive fork. ``read_at`` moves no shared position, so threads can share a handle; a
        dropped handle is not closed here but released when its last reader lets go of it.
        """
        if self._pid != os.getpid():
            self._handles, self._pid = OrderedDict(), os.getpid()
        if shard in self._handles:
            self._handles.move_to_end(shard)
        else:
            self._handles[shard] = storage.open_input(self.shard_uris[shard])
            while len(self._handles) > self.max_open_shards:
                self._handles.popitem(last=False)
        return self._handles[shard]


def _locate(uri: str, digest: Any = None) -> Iterator[LocatedSample]:
    """Every sample of the shard at ``uri``, its ``.jpg`` located but not read (the file fed to
    ``digest`` on the way, when given)."""
    for key, members in _samples(uri, lambda extension: extension != "jpg", digest):
        for required in ("jpg", "cls"):
            if required not in members:
                raise FormatError(f"{uri}: sample {key!r} has no .{required} member")
        meta = _parse_meta(uri, key, members["json"].data or b"") if "json" in members else {}
        label = _parse_label(uri, key, members["cls"].data or b"")
        yield LocatedSample(key, label, meta, members["jpg"].offset, members["jpg"].size)


def _shard_uris(root_uri: str) -> list[str]:
    """The URIs of :func:`dataset_shard_names`; a shard that is a link out of the dataset is
    refused."""
    folder = ConfinedFolder(root_uri)
    return [folder.join(SHARD_DIR, name) for name in dataset_shard_names(root_uri)]


def dataset_shard_names(root_uri: str) -> list[str]:
    """The shard file names every reader of the dataset at ``root_uri`` reads: those its
    manifest lists, in its order; without a manifest, the ``.tar`` files in ``root/shards``,
    sorted by name, temporary files left out."""
    manifest_uri = storage.join(root_uri, MANIFEST_FILE)
    if storage.exists(manifest_uri):
        return manifest_shards(storage.read_json_object(manifest_uri), manifest_uri)
    shard_dir = storage.join(root_uri, SHARD_DIR)
    names = [name for name in (storage.listdir(shard_dir) if storage.is_dir(shard_dir) else [])
             if name.endswith(".tar") and not name.startswith(storage.TEMP_MARKER)]
    if not names:
        raise FormatError(f"{shard_dir}: no shards (expected shard-NNNNNN.tar)")
    return names


def manifest_shards(manifest: dict[str, Any], uri: str) -> list[str]:
    """The shard file names the manifest read from ``uri`` lists, in its order.

    Each entry names its file under ``shard`` (a synthesised dataset) or ``name`` (a measured
    pool, :mod:`factory.synth.measure`). FormatError unless ``shards`` is a non-empty list of
    entries each naming another ``shard-NNNNNN.tar`` (names that stay inside ``shards/``; a
    repeated one would be read twice).
    """
    entries = manifest.get("shards")
    names = [entry.get("shard", entry.get("name")) if isinstance(entry, dict) else None
             for entry in entries] if isinstance(entries, list) else []
    if not names or not all(isinstance(name, str) and _SHARD_NAME.fullmatch(name)
                            for name in names) or len(set(names)) != len(names):
        raise FormatError(f"{uri}: expected 'shards', a list of entries naming "
                          "shard-NNNNNN.tar files, each once")
    return names


def listed_shard_uris(dataset: str, manifest: dict[str, Any]) -> list[str]:
    """The URIs of the shards ``manifest`` (the dataset's, already read) lists, in its order:
    what every reader of a dataset reads. A shard that is a link out of the dataset is refused."""
    folder = ConfinedFolder(dataset)
    return [folder.join(SHARD_DIR, name)
            for name in manifest_shards(manifest, storage.join(dataset, MANIFEST_FILE))]


def refuse_inside_dataset(uri: str, what: str) -> None:
    """UserError naming ``what`` when a folder above ``uri`` holds ``shards/``: a synthesised
    dataset, as :func:`~factory.formats.dataset.open_dataset` sees one. What another stage
    writes inside a dataset is taken for part of it (an export written to
    ``shards/shard-000002.tar`` made every reader of the dataset fail)."""
    for folder in _folders_above(storage.absolute(uri)):
        if storage.is_dir(storage.join(folder, SHARD_DIR)):
            raise UserError(f"{what} {uri}: lies inside the synthesised dataset {folder} (it "
                            f"holds {SHARD_DIR}/); choose a location outside it")


def _folders_above(uri: str) -> Iterator[str]:
    """The folders above ``uri``, nearest first, up to the filesystem's root or the bucket."""
    if "://" in uri:
        base, question, query = uri.partition("?")
        scheme, _, path = base.partition("://")
        prefix, suffix = f"{scheme}://", question + query
    else:
        path, prefix, suffix = uri, "", ""
    path = path.rstrip("/") or "/"
    parent = posixpath.dirname(path)
    while parent and parent != path:
        yield f"{prefix}{parent}{suffix}"
        path, parent = parent, posixpath.dirname(parent)


def _within(uri: str, sample: LocatedSample, field: str,
            bounds: tuple[float, float] | None) -> bool:
    """Whether the sample's json ``field`` lies in the inclusive ``bounds``; True without bounds."""
    if bounds is None:
        return True
    value = sample.meta.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FormatError(f"{uri}: sample {sample.key!r}: expected a number in json field "
                          f"{field!r} to select by, found {value!r}")
    return bounds[0] <= value <= bounds[1]


def _soft_parents(metadata: list[dict], labels: np.ndarray) -> dict[int, tuple[int, int, float]]:
    """Index -> (first parent's label, second parent's label, phi) for every sample of a mixed
    identity labelled ``soft`` whose parents are both plain identities among ``labels``."""
    plain = {int(label) for label, meta in zip(labels, metadata) if not meta.get("mixup")}
    soft = {}
    for index, meta in enumerate(metadata):
        mixup = meta.get("mixup") or {}
        parents = mixup.get("parents")
        if mixup.get("labels") == "soft" and parents and all(int(p) in plain for p in parents):
            soft[index] = (int(parents[0]), int(parents[1]), float(mixup["phi"]))
    return soft


def _with_mixup_share(kept: list[tuple[int, LocatedSample]],
                      share: float) -> list[tuple[int, LocatedSample]]:
    """The samples of the most identities whose identity-mixup share is ``share``.

    With P plain and X mixup identities available, T = min(X / share, P / (1 - share))
    identities are kept: round(share T) mixup ones and the rest plain, each the lowest labels
    of their kind, so every share draws the same identities first.
    """
    mixed = sorted({sample.label for _, sample in kept if sample.meta.get("mixup")})
    plain = sorted({sample.label for _, sample in kept if not sample.meta.get("mixup")})
    limits = []
    if share > 0:
        limits.append(len(mixed) / share)
    if share < 1:
        limits.append(len(plain) / (1 - share))
    total = min(limits)
    take_mixed = min(len(mixed), round(share * total))
    take_plain = min(len(plain), round(total) - take_mixed)
    labels = set(mixed[:take_mixed]) | set(plain[:take_plain])
    return [(shard, sample) for shard, sample in kept if sample.label in labels]


def _describe(bounds: tuple[float, float] | None) -> str:
    return "any range" if bounds is None else f"[{bounds[0]}, {bounds[1]}]"
