"""MXNet RecordIO (``train.rec``, ``train.idx``, ``property``) as insightface uses it, pure Python.

The mxnet package no longer imports with current numpy, so this module reads and writes the
format itself, byte-compatible with dmlc-core's ``RecordIOWriter``/``RecordIOReader`` and mxnet's
``recordio.pack``/``unpack``:

* ``train.idx``: text lines ``key<TAB>offset``; ``property``: ``num_classes,height,width``.
* Each record: little-endian uint32 magic ``0xced7230a``, uint32 ``cflag << 29 | length``, the
  payload, zero padding to a multiple of 4. A payload containing the magic at a 4-byte-aligned
  offset is split there into parts (cflag 1 first, 2 middle, 3 last; 0 for a whole record) and
  the magic itself is dropped; the reader puts it back between the parts.
* Payload: ``IRHeader`` packed as ``IfQQ`` (flag, label, id, id2; 24 bytes), then ``flag``
  float32 labels when ``flag > 0``, then the data (a JPEG for images).
* insightface layout: key 0 is a header record (flag 2, labels ``(a, b)``); keys ``1 .. a-1``
  are images, keys ``a .. b-1`` identity records with labels ``(first_key, end_key)``. Without
  that header record every key is an image.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import IO, Any, NamedTuple

import numpy as np

from factory import storage
from factory.errors import FormatError
from factory.formats.confined import ConfinedFolder
from factory.formats.images import decode_image

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
_IR = struct.Struct("<IfQQ")
_MAX_LENGTH = (1 << 29) - 1
MAX_EXACT_LABEL = 2**24  # float32 holds every integer below this exactly, not above


class IRHeader(NamedTuple):
    """mxnet's image-record header. ``label`` is a float, or a tuple of floats when ``flag > 0``."""

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int


def pack_record(header: IRHeader, data: bytes) -> bytes:
    """The payload for ``header`` + ``data``, like mxnet's ``recordio.pack``.

    As in mxnet, ``flag`` is derived from ``label``: 0 for a number, the label count for a
    sequence (the labels then precede ``data`` as float32). Labels of magnitude 2**24 or more
    raise ValueError: float32 cannot store every such integer exactly, so a key or class id
    would silently change.
    """
    if isinstance(header.label, (int, float, np.number)):
        labels: tuple[float, ...] = (float(header.label),)
        prefix = _IR.pack(0, labels[0], header.id, header.id2)
    else:
        labels = tuple(float(value) for value in header.label)
        prefix = _IR.pack(len(labels), 0.0, header.id, header.id2)
        prefix += np.asarray(labels, dtype="<f4").tobytes()
    for value in labels:
        if abs(value) >= MAX_EXACT_LABEL:
            raise ValueError(f"label {value} is not exactly representable as float32 (limit 2**24)")
    return prefix + data


def unpack_record(payload: bytes, source: str = "<record>") -> tuple[IRHeader, bytes]:
    """Split a payload into its :class:`IRHeader` and data; ``source`` names it in errors."""
    if len(payload) < _IR.size:
        raise FormatError(f"{source}: expected a {_IR.size}-byte IRHeader, "
                          f"record has only {len(payload)} bytes")
    flag, label, record_id, record_id2 = _IR.unpack_from(payload)
    if flag == 0:
        return IRHeader(0, label, record_id, record_id2), payload[_IR.size:]
    end = _IR.size + 4 * flag
    if len(payload) < end:
        raise FormatError(f"{source}: IRHeader flag {flag} needs {flag} float32 labels, "
                          f"record has only {len(payload)} bytes")
    labels = tuple(float(v) for v in np.frombuffer(payload, "<f4", flag, _IR.size))
    return IRHeader(flag, labels, record_id, record_id2), payload[end:]


def _frame(cflag: int, part: bytes) -> bytes:
    return _FRAME.pack(MAGIC, cflag << 29 | len(part)) + part


def _frames(payload: bytes) -> bytes:
    """Frame one payload as dmlc-core does: split at aligned magics, pad the last part."""
    parts = []
    start = 0  # first byte of the part being collected
    found = payload.find(_MAGIC_BYTES)
    while found != -1:
        if found % 4 == 0:
            parts.append(_frame(1 if start == 0 else 2, payload[start:found]))
            start = found + 4
        found = payload.find(_MAGIC_BYTES, found + 1)
    parts.append(_frame(3 if start else 0, payload[start:]))
    parts.append(b"\0" * (-len(payload) % 4))
    return b"".join(parts)


class RecordIOWriter:
    """Writes ``.rec`` and ``.idx`` together; both appear under their names only on success.

    Use as a context manager. An exception inside the block (or a crash) leaves neither file
    behind, so a half-written dataset can never be mistaken for a complete one.
    """

    def __init__(self, rec_uri: str, idx_uri: str) -> None:
        self.rec_uri = rec_uri
        self.idx_uri = idx_uri
        self._stack: contextlib.ExitStack | None = None
        self._rec: IO[bytes] | None = None
        self._idx: IO[bytes] | None = None
        self._offset = 0
        self._keys: set[int] = set()

    def __enter__(self) -> RecordIOWriter:
        with contextlib.ExitStack() as stack:
            # Entered idx first so that, unwinding in reverse, rec is renamed into place first.
            self._idx = stack.enter_context(storage.atomic_output(self.idx_uri))
            self._rec = stack.enter_context(storage.atomic_output(self.rec_uri))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        stack, self._stack = self._stack, None
        self._rec = self._idx = None
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)

    def write(self, key: int, payload: bytes) -> None:
        """Append one record (a payload from :func:`pack_record`) under ``key``."""
        if self._rec is None or self._idx is None:
            raise RuntimeError("RecordIOWriter.write outside its `with` block")
        if len(payload) > _MAX_LENGTH:
            raise ValueError(f"record {key}: {len(payload)} bytes exceed the limit 2**29-1")
        if key in self._keys:
            raise ValueError(f"{self.idx_uri}: key {key} written twice")
        self._keys.add(key)
        framed = _frames(payload)
        self._rec.write(framed)
        self._idx.write(f"{key}\t{self._offset}\n".encode())
        self._offset += len(framed)


class RecordIOReader:
    """Random access to records by key. Picklable: copies reopen the file lazily in their process.

    Local files are read with ``os.pread`` on a plain ``open()`` handle, remote ones through
    pyarrow's ``read_at``; neither moves a shared file position, so threads and forked workers
    can read through one reader.
    """

    def __init__(self, rec_uri: str, idx_uri: str) -> None:
        self.rec_uri = rec_uri
        self.idx_uri = idx_uri
        # Arrays, not a dict: 24 bytes per record instead of ~100, and every worker gets a copy.
        self._keys, offsets = _read_index(idx_uri)
        order = np.argsort(self._keys, kind="stable")
        self._sorted_keys, self._sorted_offsets = self._keys[order], offsets[order]
        self._ends: tuple[np.ndarray, np.ndarray] | None = None  # span(): made on first use
        self._handle: Any = None
        self._pid = 0

    @property
    def keys(self) -> np.ndarray:
        """All keys (int64), in index-file order."""
        return self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: int) -> bool:
        return self._offset(key) is not None

    def _offset(self, key: int) -> int | None:
        """Byte offset of record ``key``, or None if the index does not list it."""
        position = int(np.searchsorted(self._sorted_keys, key))
        if position < len(self._sorted_keys) and self._sorted_keys[position] == key:
            return int(self._sorted_offsets[position])
        return None

    def span(self, key: int) -> int:
        """The bytes from record ``key``'s offset to the next record's (to the end of the file
        for the last): the record with its framing, known from the index without reading it."""
        offset = self._offset(key)
        if offset is None:
            raise FormatError(f"{self.idx_uri}: no record with key {key}")
        if self._ends is None:
            starts = np.unique(self._sorted_offsets)
            end = storage.file_size(self.rec_uri) or int(starts[-1])
            self._ends = starts, np.append(starts[1:], max(end, int(starts[-1])))
        starts, ends = self._ends
        return int(ends[int(np.searchsorted(starts, offset))] - offset)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_pid": 0}

    def close(self) -> None:
        """Close the file handle; a later :meth:`read` reopens it."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def read(self, key: int) -> bytes:
        """The payload of record ``key``, reassembled; :class:`FormatError` if the file is damaged
        or ``key`` is not in the index."""
        offset = self._offset(key)
        if offset is None:
            raise FormatError(f"{self.idx_uri}: no record with key {key}")
        parts = []
        position = offset
        while True:
            head = self._read_at(position, _FRAME.size)
            if len(head) < _FRAME.size:
                raise FormatError(f"{self.rec_uri}: record {key} at offset {offset}: expected a "
                                  f"record header at offset {position}, file ends (truncated?)")
            magic, lrec = _FRAME.unpack(head)
            if magic != MAGIC:
                raise FormatError(f"{self.rec_uri}: record {key} at offset {position}: expected "
                                  f"RecordIO magic 0x{MAGIC:08x}, found 0x{magic:08x}")
            cflag, length = lrec >> 29, lrec & _MAX_LENGTH
            if cflag not in ((0, 1) if not parts else (2, 3)):
                raise FormatError(f"{self.rec_uri}: record {key} at offset {position}: "
                                  f"unexpected continuation flag {cflag}")
            padded = length + (-length % 4)
            body = self._read_at(position + _FRAME.size, padded)
            if len(body) < padded:
                raise FormatError(f"{self.rec_uri}: record {key} at offset {position}: expected "
                                  f"{padded} bytes, file ends after {len(body)} (truncated?)")
            parts.append(body[:length])
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)
            position += _FRAME.size + padded

    def _read_at(self, offset: int, size: int) -> bytes:
        if self._handle is None or self._pid != os.getpid():
            # A handle inherited through fork is not reused: pyarrow filesystem clients do not
            # survive fork, and a fresh handle per process costs one open.
            if storage.is_remote(self.rec_uri):
                self._handle = storage.open_input(self.rec_uri)
            else:
                self._handle = _open_local(self.rec_uri)
            self._pid = os.getpid()
        return self._handle.read_at(size, offset)


class _LocalFile:
    """A local file read with ``os.pread``, which needs no seek and is safe to share.

    ``read_at`` takes pyarrow's ``(nbytes, offset)`` order, so both kinds of handle read alike.
    """

    def __init__(self, path: str) -> None:
        self._file = open(path, "rb")  # closed by close(), or when garbage-collected

    def read_at(self, size: int, offset: int) -> bytes:
        return os.pread(self._file.fileno(), size, offset)

    def close(self) -> None:
        self._file.close()


def _open_local(uri: str) -> _LocalFile:
    try:
        return _LocalFile(storage.local_path(uri))
    except OSError as exc:
        raise FormatError(f"{uri}: cannot open for reading ({exc.strerror})") from None


def _read_index(idx_uri: str) -> tuple[np.ndarray, np.ndarray]:
    """Keys and offsets (int64 arrays, file order) from an ``.idx`` file of ``key<TAB>offset``.

    Parsed in bulk, since million-image indexes are common; only on failure are the lines
    walked one by one to name the first bad one.
    """
    try:
        text = storage.read_text(idx_uri)
    except UnicodeDecodeError:
        raise FormatError(f"{idx_uri}: expected text lines 'key<TAB>offset', found binary data") \
            from None
    lines = text.splitlines()
    fields = text.split()
    try:
        table = np.fromiter(map(int, fields), np.int64, len(fields)).reshape(-1, 2)
        well_formed = len(table) == len(lines) - lines.count("")
    except (ValueError, OverflowError):
        well_formed = False
    if not well_formed:
        number, line = _first_bad_line(lines)
        raise FormatError(f"{idx_uri}: line {number}: expected 'key<TAB>offset', "
                          f"found {line[:60]!r}")
    keys, offsets = table[:, 0], table[:, 1]
    sorted_keys = np.sort(keys)
    repeated = sorted_keys[1:][sorted_keys[1:] == sorted_keys[:-1]]
    if repeated.size:
        raise FormatError(f"{idx_uri}: key {repeated[0]} appears more than once")
    if offsets.size and offsets.min() < 0:
        raise FormatError(f"{idx_uri}: expected offsets >= 0, found {offsets.min()}")
    return keys, offsets


def _first_bad_line(lines: list[str]) -> tuple[int, str]:
    """The first non-empty line that is not two 64-bit integers, with its 1-based number."""
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if line and (len(parts) != 2 or not all(_is_int64(part) for part in parts)):
            return number, line
    raise AssertionError("no bad line although bulk parsing failed")


def _is_int64(text: str) -> bool:
    try:
        return -(2**63) <= int(text) < 2**63
    except ValueError:
        return False


def write_insightface_rec(
    out_dir_uri: str,
    samples: Iterable[tuple[int, bytes]],
    num_images: int,
    num_classes: int,
    image_size: tuple[int, int],
) -> None:
    """Write ``train.rec``, ``train.idx`` and ``property`` in insightface's layout.

    ``samples`` are ``(label, jpeg_bytes)`` sorted by label, every label ``0 .. num_classes-1``
    present and each identity's images contiguous. They are streamed, never held in memory.
    ValueError (and no files left behind) if the count or the label order is wrong.
    """
    if num_images < 1 or num_classes < 1:
        raise ValueError(f"need num_images >= 1 and num_classes >= 1, "
                         f"got {num_images} and {num_classes}")
    first_identity_key = num_images + 1
    end_key = first_identity_key + num_classes
    with RecordIOWriter(storage.join(out_dir_uri, "train.rec"),
                        storage.join(out_dir_uri, "train.idx")) as writer:
        writer.write(0, pack_record(IRHeader(2, (first_identity_key, end_key), 0, 0), b""))
        starts: list[int] = []  # starts[label] = key of that identity's first image
        key = 0
        for label, data in samples:
            key += 1
            if key > num_images:
                raise ValueError(f"more than num_images={num_images} samples")
            if not starts or label != len(starts) - 1:
                if label != len(starts):
                    raise ValueError(f"sample {key - 1}: label {label} out of order; labels must "
                                     f"be sorted and contiguous, expected {len(starts)}")
                if label >= num_classes:
                    raise ValueError(f"sample {key - 1}: label {label} >= "
                                     f"num_classes={num_classes}")
                starts.append(key)
            writer.write(key, pack_record(IRHeader(0, float(label), key, 0), data))
        if key != num_images:
            raise ValueError(f"got {key} samples, expected num_images={num_images}")
        if len(starts) != num_classes:
            raise ValueError(f"samples have {len(starts)} identities, expected {num_classes}")
        ends = starts[1:] + [num_images + 1]
        for label, (start, end) in enumerate(zip(starts, ends)):
            writer.write(first_identity_key + label,
                         pack_record(IRHeader(2, (start, end), 0, 0), b""))
    height, width = image_size
    storage.write_text(storage.join(out_dir_uri, "property"), f"{num_classes},{height},{width}")


class InsightFaceRecordDataset:
    """An insightface training directory (``train.rec``, ``train.idx``, ``property``) as a
    :class:`~factory.formats.dataset.FaceDataset`.

    Everything that can be checked cheaply is checked at open, so a bad dataset fails on the
    driver with one line instead of inside a training worker: the three files exist, ``property``
    parses and agrees with the records (class count, image size), the labels are consistent,
    and the last image record is complete and decodes (a truncated copy). A file that is a link
    out of the directory is refused, as in every reader of a folder.
    With the header record, labels come from the identity records only (one read per identity,
    not per image); without it, every record is read once for its label.
    """

    def __init__(self, dir_uri: str) -> None:
        self.dir_uri = dir_uri
        folder = ConfinedFolder(dir_uri)
        rec_uri, idx_uri, property_uri = (folder.join(name)
                                          for name in ("train.rec", "train.idx", "property"))
        for uri in (rec_uri, idx_uri, property_uri):
            if not storage.exists(uri):
                raise FormatError(f"{uri}: missing; an insightface RecordIO directory needs "
                                  "train.rec, train.idx and property")
        self.num_classes, height, width = _read_property(property_uri)
        self.image_size = (height, width)
        self._reader = RecordIOReader(rec_uri, idx_uri)
        if len(self._reader) == 0:
            raise FormatError(f"{idx_uri}: expected at least one record, the index is empty")
        header = self._header(0)[0] if 0 in self._reader else None
        if header is not None and header.flag > 0:
            self._keys: Sequence[int] | np.ndarray = range(1, self._int_label(header, 0, 0))
            self.labels = self._labels_from_identities(header)
        else:
            self._keys = self._reader.keys
            self.labels = np.array([self._int_label(self._header(key)[0], 0, key)
                                    for key in self._keys], dtype=np.int64)
        if len(self._keys) == 0:
            raise FormatError(f"{rec_uri}: expected at least one image record, found none")
        if self.labels.min() < 0 or self.labels.max() >= self.num_classes:
            raise FormatError(f"{rec_uri}: labels must lie in 0 .. {self.num_classes - 1} "
                              f"(num_classes from property), found {self.labels.min()} .. "
                              f"{self.labels.max()}")
        self._check_property(property_uri)

    def _check_property(self, property_uri: str) -> None:
        """The records agree with ``property``: as many classes as it says (a classifier sized
        from a wrong count trains silently wrong) and images of its size, judged by the last
        image, read in full, which also catches a truncated copy."""
        if self.labels.max() + 1 != self.num_classes:
            raise FormatError(f"{property_uri}: says {self.num_classes} classes, the records "
                              f"have labels 0 .. {self.labels.max()} "
                              f"({self.labels.max() + 1} classes)")
        last = len(self) - 1
        height, width = self.image(last).shape[:2]
        if (height, width) != self.image_size:
            raise FormatError(f"{property_uri}: says {self.image_size[0]}x{self.image_size[1]} "
                              f"images, record {self._keys[last]} is {height}x{width}")

    def _header(self, key: int) -> tuple[IRHeader, bytes]:
        source = f"{self._reader.rec_uri}: record {key}"
        return unpack_record(self._reader.read(key), source)

    def _labels_from_identities(self, header: IRHeader) -> np.ndarray:
        rec_uri = self._reader.rec_uri
        if header.flag < 2:
            raise FormatError(f"{rec_uri}: record 0: expected header labels (a, b), "
                              f"found {header.label}")
        first_identity, end = self._int_label(header, 0, 0), self._int_label(header, 1, 0)
        if not 1 <= first_identity <= end <= len(self._reader):
            raise FormatError(f"{rec_uri}: record 0: expected header labels 1 <= a <= b <= "
                              f"{len(self._reader)} (the record count), found ({first_identity}, "
                              f"{end})")
        labels = np.full(first_identity - 1, -1, dtype=np.int64)
        for identity, key in enumerate(range(first_identity, end)):
            record, _ = self._header(key)
            start, stop = self._int_label(record, 0, key), self._int_label(record, 1, key)
            if not 1 <= start <= stop <= first_identity:
                raise FormatError(f"{rec_uri}: identity record {key}: expected image keys within "
                                  f"1 .. {first_identity - 1}, found ({start}, {stop})")
            labels[start - 1:stop - 1] = identity
        unlabelled = np.flatnonzero(labels < 0)
        if unlabelled.size:
            raise FormatError(f"{rec_uri}: image key {unlabelled[0] + 1} belongs to no identity "
                              "record")
        return labels

    def _int_label(self, header: IRHeader, position: int, key: int) -> int:
        """Label ``position`` of record ``key``'s header, which must be an integer."""
        labels = header.label if isinstance(header.label, tuple) else (header.label,)
        if position >= len(labels) or not float(labels[position]).is_integer():
            raise FormatError(f"{self._reader.rec_uri}: record {key}: expected an integer label "
                              f"at position {position}, found {str(header.label)[:60]}")
        return int(labels[position])

    def __len__(self) -> int:
        return len(self._keys)

    def raw(self, index: int) -> bytes:
        """The encoded image bytes (usually JPEG) of image ``index``."""
        return self._header(self._keys[index])[1]

    def stored_size(self, index: int) -> int:
        """About the bytes of image ``index`` as stored, from the index alone (not read): its
        record's span less the record frame and the image header."""
        return max(0, self._reader.span(int(self._keys[index])) - _FRAME.size - _IR.size)

    def source(self, index: int) -> str:
        """Where image ``index`` lies, as errors name it: its record."""
        return f"{self._reader.rec_uri}: record {self._keys[index]}"

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` decoded to HxWx3 uint8 RGB."""
        return decode_image(self.raw(index), self.source(index))


def _read_property(uri: str) -> tuple[int, int, int]:
    """``(num_classes, height, width)`` from an insightface ``property`` file."""
    try:
        text = storage.read_text(uri)
        values = tuple(int(field) for field in text.strip().split(","))
    except (UnicodeDecodeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise FormatError(f"{uri}: expected 'num_classes,height,width' (three positive integers)")
    return values[0], values[1], values[2]

