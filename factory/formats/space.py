"""How much disk the factory's big writes take, estimated before they start.

A command that writes gigabytes checks that its disk has room first and, should the disk fill up
all the same, names the space it needed (:func:`factory.storage.space_for`). Both need an
estimate, and these are the estimates of what lands on disk per image:

* a JPEG the factory encodes (:func:`jpeg_bytes`): a fixed header plus bits per pixel by quality,
  calibrated on 32 to 224 px face renders (32 px at quality 95: 1.2 kB measured, 1.0 kB
  estimated; 112 px: 4.4 kB measured, 5.3 kB estimated), for a write whose images do not exist
  yet. A synthesis replaces it with its own shards' measured sizes as soon as one is complete;
* a sample of a WebDataset shard (:func:`shard_sample_bytes`): its JPEG and three 512-byte tar
  headers, its label and metadata padded to a block each, and its row of the Parquet metadata.
  A 32 px shard of 4 samples measured 4,608 bytes of tar per sample (2,019-byte JPEGs), 2,048
  of padding to the tar's 10,240-byte record, and 7,662 bytes of Parquet, nearly all of it
  schema and footer (:data:`SHARD_FIXED_BYTES`);
* an exported image (:func:`export_bytes`): its stored bytes, as the source's index or listing
  gives them (``stored_size``, no image is read), plus the record framing (``rec``) or the file
  system's block rounding (``folder``), and its metadata lines.

They are estimates ("about"): good to tens of percent, which is what the check and the error
line need; the check refuses only when the free space is below the estimate itself.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from pyarrow import fs as pafs

from factory import storage
from factory.errors import nearest_existing_folder

JPEG_HEADER_BYTES = 620
"""A baseline JPEG's markers and tables (SOI, APP0, two quantisation and four Huffman tables,
SOF, SOS, EOI) as Pillow writes them."""
JPEG_BITS_PER_PIXEL: tuple[tuple[int, float], ...] = (
    (1, 0.3), (50, 0.9), (75, 1.4), (90, 2.2), (95, 3.0), (100, 6.5))
"""(quality, bits per pixel) of face images, linearly interpolated between: face-world renders
measured 1.24, 1.95, 2.79 and 5.97 bits per pixel at 112 px and qualities 75, 90, 95 and 100,
taken about 10 % higher since photographs and generated faces hold more texture."""
TAR_BLOCK = 512
SHARD_SAMPLE_OVERHEAD = 5 * TAR_BLOCK
"""Per sample beside its JPEG (itself padded to whole blocks): three tar headers, and the label
and the metadata JSON, under 512 bytes each, so one block each."""
PARQUET_ROW_BYTES = 64
"""A sample's row of the shard's Parquet metadata, compressed."""
SHARD_FIXED_BYTES = 6_144 + 8_192 + 2_048
"""Per shard: the tar's two end blocks and, on average, half of a 10,240-byte record of
padding; the Parquet file's schema and footer; the stats and identity-centers files."""
RECORD_OVERHEAD = 8 + 24 + 3 + 24
"""Per RecordIO record: its frame header, its IRHeader, padding to 4 bytes, and its line of
``train.idx``."""
METADATA_ROW_BYTES = 160
"""Per exported image beside its source metadata: its ``metadata.jsonl`` line's own fields and
its ``metadata.parquet`` row."""
SIZE_SAMPLES = 64
"""How many of an export's images are read to measure their size, from a source that cannot
say it without reading them."""


class _RawDataset(Protocol):
    """What :func:`export_bytes` reads of a dataset: stored bytes by source index (and, from the
    factory's readers, ``stored_size(index)``: their length, without reading them)."""

    def raw(self, index: int) -> bytes: ...


def jpeg_bytes(side: int, quality: int) -> int:
    """About how many bytes a ``side`` x ``side`` face image takes as a JPEG of ``quality``."""
    qualities, bits = zip(*JPEG_BITS_PER_PIXEL)
    per_pixel = float(np.interp(quality, qualities, bits))
    return JPEG_HEADER_BYTES + math.ceil(side * side * per_pixel / 8)


def shard_sample_bytes(jpeg: int) -> int:
    """What one sample whose JPEG is ``jpeg`` bytes adds to a shard and its Parquet file."""
    return _blocks(jpeg, TAR_BLOCK) + SHARD_SAMPLE_OVERHEAD + PARQUET_ROW_BYTES


def export_bytes(dataset: _RawDataset, order: Sequence[int] | np.ndarray, classes: int,
                 format: str, out: str) -> int:
    """About how many bytes an export of the images ``order`` (source indices) of ``dataset``,
    in ``classes`` classes, still has to write to ``out`` in ``format`` (``rec`` or
    ``folder``).

    An export copies images unchanged, so each takes its stored bytes: every selected one's
    ``stored_size`` where the reader has it (shards, RecordIO, image folders: from their index
    or listing), else the mean over up to :data:`SIZE_SAMPLES` read from an even spread of
    ``order``. A folder export's files each take whole blocks of the file system, and what an
    interrupted folder export left in ``out`` is kept, so it is subtracted; a RecordIO export
    writes ``train.rec`` anew."""
    count = len(order)
    if count == 0:
        return 0
    picks = [int(order[position]) for position in
             sorted(set(np.linspace(0, count - 1, min(count, SIZE_SAMPLES)).astype(int)))]
    stored_size = getattr(dataset, "stored_size", None)
    if callable(stored_size):
        image = sum(stored_size(int(index)) for index in order) / count
    else:
        image = float(np.mean([len(dataset.raw(index)) for index in picks]))
    metadata = _metadata_bytes(getattr(dataset, "metadata", None), picks)
    if format == "folder":
        block = _block_size(out)
        total = count * (_blocks(image, block) + 2 * metadata) + (classes + 1) * block
        return max(0, total - _bytes_under(out, block))
    return math.ceil(count * (image + RECORD_OVERHEAD + 2 * metadata)
                     + (classes + 1) * (RECORD_OVERHEAD + 16))


def _metadata_bytes(metadata: Any, picks: list[int]) -> float:
    """Per image: the source's own metadata (a shard sample's JSON) as ``metadata.jsonl``
    holds it, plus the export's fields."""
    if not isinstance(metadata, Sequence) or not metadata:
        return METADATA_ROW_BYTES
    return METADATA_ROW_BYTES + float(np.mean(
        [len(json.dumps(metadata[index])) for index in picks if index < len(metadata)] or [0]))


def _blocks(size: float, block: int) -> int:
    """``size`` bytes rounded up to whole blocks of ``block`` bytes."""
    return int(math.ceil(size / block)) * block


def _block_size(out: str) -> int:
    """The allocation unit of the local file system ``out`` lies on (1 for a remote URI)."""
    if storage.is_remote(out):
        return 1
    folder = nearest_existing_folder(storage.resolve(out)[1])
    try:
        return max(1, os.statvfs(folder).f_frsize) if folder else 4096
    except (OSError, AttributeError):  # no statvfs (Windows), or the folder went away
        return 4096


def _bytes_under(out: str, block: int) -> int:
    """The bytes of the files already in ``out``, in whole blocks (0 when it does not exist)."""
    if not storage.is_dir(out):
        return 0
    filesystem, root = storage.resolve(out)
    return sum(_blocks(info.size or 0, block)
               for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
               if info.type == pafs.FileType.File)
