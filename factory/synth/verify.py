"""``factory verify DIR``: is a synthesised dataset still what its manifest says it is?

Every shard the manifest lists is checked against its recorded size and sha256, and its stats
and centers files (what a synthesis rerun and ``factory analyze`` read) must load and agree
with the manifest. Each shard is read once; nothing is written. A synthesis rerun with the
dataset's config writes the damaged shards again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from factory import storage
from factory.errors import FormatError
from factory.formats.shards import SHARD_DIR, shard_damage
from factory.synth.synthesize import read_centers, read_manifest, read_stats


@dataclass
class Verification:
    """What ``factory verify`` found: shard and sample counts, and each damaged shard's reason."""

    dataset: str
    shards: int
    samples: int
    damaged: dict[str, str] = field(default_factory=dict)


def verify_dataset(dataset: str) -> Verification:
    """Check every shard of the dataset at ``dataset`` (see the module doc)."""
    manifest = read_manifest(dataset)
    verification = Verification(dataset, len(manifest["shards"]), 0)
    for index, entry in enumerate(manifest["shards"]):
        reason = shard_damage(storage.join(dataset, SHARD_DIR, entry["shard"]),
                              _recorded(entry, "size_bytes", int), _recorded(entry, "sha256", str))
        reason = reason or _records_damage(dataset, index, entry)
        if reason:
            verification.damaged[entry["shard"]] = reason
        verification.samples += _recorded(entry, "count", int) or 0
    return verification


def _recorded(entry: dict[str, Any], key: str, kind: type) -> Any:
    """A manifest entry's ``key`` when it holds a ``kind``; None when the manifest lacks it."""
    value = entry.get(key)
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _records_damage(dataset: str, index: int, entry: dict[str, Any]) -> str | None:
    """Why shard ``index``'s stats or centers file is unusable or disagrees with the manifest."""
    try:
        stats = read_stats(dataset, index)
        read_centers(dataset, index, len(stats["labels"]))
    except FormatError as exc:
        return str(exc)
    if stats["sha256"] != entry.get("sha256", stats["sha256"]):
        return "its stats file records another sha256 than the manifest"
    return None


def damage_message(verification: Verification, shown: int = 3) -> str:
    """One line naming the damaged shards (the first ``shown`` with their reasons)."""
    damaged = list(verification.damaged.items())
    listed = "; ".join(f"{name}: {reason}" for name, reason in damaged[:shown])
    more = f"; and {len(damaged) - shown} more" if len(damaged) > shown else ""
    return (f"{verification.dataset}: {len(damaged)} of {verification.shards} shards damaged "
            f"({listed}{more}); rerun factory synthesize with the dataset's config to write "
            "them again")
