"""``factory verify DIR``: is a synthesised dataset still what its manifest says, and is that
what its readers read?

* ``shards/`` holds exactly the shards the manifest lists, ``shard-000000.tar`` onwards in its
  order, each with its Parquet metadata file beside it: a file no entry lists (a shard added,
  one whose entry was dropped, an export written there) is refused with one line naming it,
  and a listed shard that is absent is damaged;
* every listed shard is read once, as :class:`~factory.formats.shards.ShardDataset` reads it:
  its size and sha256 must be the recorded ones and its sample count the manifest's, and its
  stats and centers files (what a synthesis rerun and ``factory analyze`` read) must load and
  agree with the manifest;
* every shard's Parquet metadata (:mod:`factory.formats.shard_metadata`) must be the table its
  tar gives, row for row (keys, image offsets and sizes, every metadata column), and the file
  the manifest's ``metadata`` listing records (rows, size, sha256);
* the manifest's totals (``counts``: samples, synthetic and real images, identities, shards),
  which ``factory analyze`` copies into the dataset card, must be the shards' own.

Nothing is written. A synthesis rerun with the dataset's config writes damaged shards again and
rebuilds the manifest from the shards' stats files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from factory import storage
from factory.errors import FormatError
from factory.formats.confined import ConfinedFolder
from factory.formats.shard_metadata import (
    metadata_difference,
    metadata_name,
    metadata_table,
    read_metadata,
)
from factory.formats.shards import (
    SHARD_DIR,
    ShardScan,
    listed_shard_uris,
    manifest_shards,
    scan_shard,
    sha256_damage,
    shard_damage,
    shard_name,
)
from factory.synth.layout import MANIFEST_FILE
from factory.synth.reader import read_centers, read_manifest, read_stats

RERUN = "rerun factory synthesize with the dataset's config to write the manifest again"


@dataclass
class Verification:
    """What ``factory verify`` found: shard and sample counts (the samples counted in the sound
    shards), and each damaged shard's reason."""

    dataset: str
    shards: int
    samples: int
    damaged: dict[str, str] = field(default_factory=dict)


def verify_dataset(dataset: str) -> Verification:
    """Check the dataset at ``dataset`` (see the module doc).

    FormatError (one line) when ``shards/`` is not the manifest's list or, with every shard
    sound, when the manifest's totals are not the shards'; damaged shards, with their reasons,
    are in the result.
    """
    manifest = read_manifest(dataset)
    names = manifest_shards(manifest, storage.join(dataset, MANIFEST_FILE))
    _check_listing(dataset, names)
    files = _metadata_files(dataset, manifest, names)
    verification = Verification(dataset, len(names), 0)
    scans = []
    uris = listed_shard_uris(dataset, manifest)
    for index, (name, uri, entry, listed) in enumerate(zip(names, uris, manifest["shards"],
                                                          files)):
        reason, scan = _shard_damage(dataset, index, uri, entry, listed)
        if reason:
            verification.damaged[name] = reason
        if scan is not None:
            scans.append(scan)
    verification.samples = sum(scan.count for scan in scans)
    if not verification.damaged:
        _check_totals(dataset, manifest, scans)
    return verification


def _check_listing(dataset: str, names: list[str]) -> None:
    """FormatError unless the manifest lists ``shard-000000.tar`` onwards in order (stats files
    are found by position) and ``shards/`` holds no file but those and their Parquet files
    (temporary files of a running synthesis aside): readers read only the listed ones, so any
    other is unseen data, or an unrelated file a reader of the whole folder would trip over."""
    manifest_uri = storage.join(dataset, MANIFEST_FILE)
    for index, name in enumerate(names):
        if name != shard_name(index):
            raise FormatError(f"{manifest_uri}: shards[{index}] names {name}, expected "
                              f"{shard_name(index)} (one entry per shard, in order); {RERUN}")
    shard_dir = storage.join(dataset, SHARD_DIR)
    on_disk = storage.listdir(shard_dir) if storage.is_dir(shard_dir) else []
    listed = set(names) | {metadata_name(name) for name in names}
    unlisted = sorted((name for name in on_disk  # shards named before Parquet files
                       if name not in listed and not name.startswith(storage.TEMP_MARKER)),
                      key=lambda name: (name.endswith(".parquet"), name))
    if unlisted:
        others = f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else ""
        raise FormatError(f"{storage.join(shard_dir, unlisted[0])}: not listed in "
                          f"{manifest_uri}{others}; expected {SHARD_DIR}/ to hold exactly the "
                          f"shards it lists, the files every reader reads: move it out of "
                          f"{SHARD_DIR}/ or, if its entry was lost, {RERUN}")


def _metadata_files(dataset: str, manifest: dict[str, Any],
                    names: list[str]) -> list[dict[str, Any]]:
    """The manifest's record of each shard's Parquet metadata file, in shard order; FormatError
    unless ``metadata.files`` names each shard's file, in order (a manifest written before
    these files existed has none)."""
    listing = manifest.get("metadata")
    files = listing.get("files") if isinstance(listing, dict) else None
    expected = [metadata_name(name) for name in names]
    if not isinstance(files, list) or [
            entry.get("file") if isinstance(entry, dict) else None for entry in files] != expected:
        raise FormatError(f"{storage.join(dataset, MANIFEST_FILE)}: expected metadata.files to "
                          f"list {expected[0]} onwards, one Parquet file per shard in order; "
                          f"{RERUN} (it writes missing Parquet files from the shards)")
    return files


def _shard_damage(dataset: str, index: int, uri: str, entry: dict[str, Any],
                  listed: dict[str, Any]) -> tuple[str | None, ShardScan | None]:
    """Why listed shard ``index`` or its Parquet metadata is not what the manifest records
    (None when both are), and what a read of the shard found (None when it could not be
    read)."""
    reason = shard_damage(uri, _recorded(entry, "size_bytes", int), None)
    if reason:
        return reason, None
    try:
        scan = scan_shard(uri)
    except FormatError as exc:
        return str(exc).removeprefix(f"{uri}: "), None
    sha256 = _recorded(entry, "sha256", str)
    reason = None if sha256 is None else sha256_damage(scan.sha256, sha256)
    if reason is None and scan.count != _recorded(entry, "count", int):
        reason = f"holds {scan.count} samples, the manifest records {entry.get('count')!r}"
    return (reason or _records_damage(dataset, index, entry, listed)
            or _metadata_damage(dataset, index, uri, scan, listed)), scan


def _recorded(entry: dict[str, Any], key: str, kind: type) -> Any:
    """A manifest entry's ``key`` when it holds a ``kind``; None when the manifest lacks it."""
    value = entry.get(key)
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _records_damage(dataset: str, index: int, entry: dict[str, Any],
                    listed: dict[str, Any]) -> str | None:
    """Why shard ``index``'s stats or centers file is unusable or disagrees with the manifest
    (its entry ``entry``, its Parquet file's ``listed``)."""
    try:
        stats = read_stats(dataset, index)
        read_centers(dataset, index, len(stats["labels"]))
    except FormatError as exc:
        return str(exc)
    if stats["sha256"] != entry.get("sha256", stats["sha256"]):
        return "its stats file records another sha256 than the manifest"
    if stats.get("metadata") != {key: listed.get(key) for key in ("rows", "size_bytes",
                                                                    "sha256")}:
        return "its stats file records another Parquet metadata file than the manifest"
    return None


def _metadata_damage(dataset: str, index: int, uri: str, scan: ShardScan,
                     listed: dict[str, Any]) -> str | None:
    """Why shard ``index``'s Parquet metadata is not the table its tar (at ``uri``, read as
    ``scan``) gives, or not the file the manifest lists as ``listed``; None when it is both."""
    name = listed["file"]
    try:
        metadata_uri = ConfinedFolder(dataset).join(SHARD_DIR, name)
        stored = read_metadata(metadata_uri)
        reason = metadata_difference(stored, metadata_table(index, scan.samples, uri))
    except FormatError as exc:
        return f"{name}: {str(exc).split(': ', 1)[-1]}"
    if reason is None and stored.num_rows != _recorded(listed, "rows", int):
        reason = f"holds {stored.num_rows} rows, the manifest records {listed.get('rows')!r}"
    reason = reason or shard_damage(metadata_uri, _recorded(listed, "size_bytes", int),
                                    _recorded(listed, "sha256", str))
    return None if reason is None else f"{name}: {reason}"


def _check_totals(dataset: str, manifest: dict[str, Any], scans: list[ShardScan]) -> None:
    """FormatError naming the first of the manifest's ``counts`` that is not what the shards
    hold (``factory analyze`` copies them into the dataset card)."""
    samples = sum(scan.count for scan in scans)
    real = sum(scan.real_images for scan in scans)
    found = {"samples": samples, "synthetic_images": samples - real, "real_images": real,
             "identities": len(set().union(*(scan.labels for scan in scans))),
             "shards": len(scans)}
    counts = manifest.get("counts")
    recorded = counts if isinstance(counts, dict) else {}
    for key, value in found.items():
        if _recorded(recorded, key, int) != value:
            raise FormatError(f"{storage.join(dataset, MANIFEST_FILE)}: counts.{key} is "
                              f"{recorded.get(key)!r}, expected {value} (counted in the "
                              f"shards); {RERUN}")


def damage_message(verification: Verification, shown: int = 3) -> str:
    """One line naming the damaged shards (the first ``shown`` with their reasons)."""
    damaged = list(verification.damaged.items())
    listed = "; ".join(f"{name}: {reason}" for name, reason in damaged[:shown])
    more = f"; and {len(damaged) - shown} more" if len(damaged) > shown else ""
    return (f"{verification.dataset}: {len(damaged)} of {verification.shards} shards damaged "
            f"({listed}{more}); rerun factory synthesize with the dataset's config to write "
            "them, and the manifest, again")
