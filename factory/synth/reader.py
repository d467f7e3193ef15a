"""Reading a synthesised dataset: its manifest, each shard's stats record and identity centers,
and which shards are complete, damaged, or lack their Parquet metadata.

Everything that reads a dataset (``factory verify``, ``analyze``, ``measure``, the experiments,
the sweeps) and the synthesis driver deciding what a rerun writes again read through here, so
none of them imports the writer, Ray or torch to read a manifest. A shard counts as complete
when its stats file, written last, exists; a complete shard is damaged when its tar no longer
matches the size and sha256 its stats record, or its centers file does not load. A sound
complete shard whose Parquet metadata file is missing or not the one its stats record (or
whose stats, written before these files existed, record none) needs only that file written
again from its tar. Every check fails with a :class:`FormatError` of one line that names the
file.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np

from factory import storage
from factory.errors import FormatError
from factory.formats.shard_metadata import metadata_uri
from factory.formats.shards import SHARD_DIR, manifest_shards, shard_damage, shard_name
from factory.synth.layout import (
    HISTOGRAM_EDGES,
    MANIFEST_FILE,
    STATS_DIR,
    centers_uri,
    stats_uri,
)

_STATS_NAME = re.compile(r"shard-([0-9]{6})\.json")
_STATS_FIELDS = {"count": int, "size_bytes": int, "real_images": int, "sha256": str,
                 "labels": list, "histogram_inquiry": list, "histogram_center": list}
_METADATA_FIELDS = {"rows": int, "size_bytes": int, "sha256": str}
"""A stats file's ``metadata`` record: its shard's Parquet file (absent in stats written before
those files existed)."""


def read_manifest(dataset: str) -> dict[str, Any]:
    """A dataset's manifest, with the fields readers rely on checked: the shard list (names
    that stay inside ``shards/``), the generator's URI and the config."""
    uri = storage.join(dataset, MANIFEST_FILE)
    if not storage.exists(uri):
        raise FormatError(f"{uri}: no manifest (not a dataset written by factory synthesize, "
                          "or the run has not finished)")
    manifest = storage.read_json_object(uri)
    manifest_shards(manifest, uri)  # FormatError for a bad shard list
    if not isinstance(manifest.get("generator_uri"), str) or \
            not isinstance(manifest.get("config"), dict):
        raise FormatError(f"{uri}: expected generator_uri and config entries")
    return manifest


def read_stats(out: str, shard: int) -> dict[str, Any]:
    """A shard's stats record, every field the manifest and the analysis use checked."""
    uri = stats_uri(out, shard)
    stats = storage.read_json_object(uri)
    for key, kind in _STATS_FIELDS.items():
        if isinstance(stats.get(key), bool) or not isinstance(stats.get(key), kind):
            raise FormatError(f"{uri}: expected {key} ({kind.__name__}) in a shard's stats; "
                              f"remove the file to have shard {shard} written again")
    bins = len(HISTOGRAM_EDGES) - 1
    for key in ("histogram_inquiry", "histogram_center"):
        if len(stats[key]) != bins or not all(isinstance(v, int) for v in stats[key]):
            raise FormatError(f"{uri}: expected {key} to hold {bins} counts; remove the file "
                              f"to have shard {shard} written again")
    metadata = stats.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(metadata.get(key), kind) and not isinstance(metadata.get(key), bool)
            for key, kind in _METADATA_FIELDS.items())):
        raise FormatError(f"{uri}: expected metadata to record rows, size_bytes and sha256 of "
                          f"the shard's Parquet file; remove the file to have shard {shard} "
                          "written again")
    return stats


def read_centers(out: str, shard: int, rows: int) -> np.ndarray:
    """A shard's identity centers, ``[rows, dim]`` floats (never unpickled)."""
    uri = centers_uri(out, shard)
    try:
        centers = np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FormatError(f"{uri}: not a readable .npy array ({exc})") from None
    if centers.ndim != 2 or len(centers) != rows or centers.dtype.kind != "f":
        raise FormatError(f"{uri}: expected {rows} identity centers as a 2-d float array, "
                          f"found shape {centers.shape} of {centers.dtype}")
    return centers


def complete_shards(out: str) -> set[int]:
    """Shards whose stats file (written last) exists."""
    directory = storage.join(out, STATS_DIR)
    if not storage.is_dir(directory):
        return set()
    names = storage.listdir(directory)
    return {int(match.group(1)) for match in map(_STATS_NAME.fullmatch, names) if match}


def damaged_shards(out: str, done: set[int]) -> dict[int, str]:
    """The complete shards whose files no longer match their stats record (size, sha256) or
    whose centers file does not load, with the reason: a rerun must not trust its markers."""
    damaged = {}
    for shard in sorted(done):
        stats = read_stats(out, shard)
        reason = shard_damage(storage.join(out, SHARD_DIR, shard_name(shard)),
                              stats["size_bytes"], stats["sha256"])
        if reason is None:
            try:
                read_centers(out, shard, len(stats["labels"]))
            except FormatError as exc:
                reason = f"its centers file is damaged ({exc})"
        if reason is not None:
            damaged[shard] = reason
    return damaged


def stale_metadata(out: str, done: set[int]) -> dict[int, str]:
    """The complete shards whose Parquet metadata file is missing or is not the one their stats
    record (size, sha256), or whose stats record none, with the reason: a rerun writes it
    again from the shard's tar."""
    stale = {}
    for shard in sorted(done):
        record = read_stats(out, shard).get("metadata")
        reason = ("its stats record no Parquet metadata" if record is None else
                  shard_damage(metadata_uri(out, shard), record["size_bytes"], record["sha256"]))
        if reason is not None:
            stale[shard] = reason
    return stale
