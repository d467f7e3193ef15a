"""How much disk a synthesis still needs, checked before its actor pool starts.

The shards left to write hold a known number of samples (the plan says so); what a sample takes
on disk is measured on the shards already complete, when a previous run left some (their tar
and Parquet sizes over their sample counts, from their stats files), and otherwise estimated
from the generator's image size and ``synthesis.jpeg_quality``
(:func:`factory.formats.space.shard_sample_bytes`). :func:`synthesis_space` refuses the pool
when the disk under ``synthesis.out`` has less free, and names that space should the disk fill
up all the same, from a driver-side write or from an actor's (whose error reaches the driver as
Ray's text of it).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np

from factory import storage
from factory.config import SynthesisConfig
from factory.formats.space import SHARD_FIXED_BYTES, jpeg_bytes, shard_sample_bytes
from factory.synth.plan import ShardItem, planned_keys
from factory.synth.reader import read_stats

MEASURED_SHARDS = 64
"""How many complete shards' stats are read to measure a sample's size (spread evenly)."""


def measured_sample_bytes(out: str, done: set[int]) -> float | None:
    """Bytes per sample of the complete shards ``done`` of ``out`` (their tar and Parquet
    files, as their stats record them); None when there are none to measure."""
    shards = sorted(done)
    if not shards:
        return None
    picks = sorted({shards[i] for i in
                    np.linspace(0, len(shards) - 1, min(len(shards), MEASURED_SHARDS)).astype(int)})
    size = count = 0
    for shard in picks:
        stats = read_stats(out, shard)
        metadata = stats.get("metadata") or {}
        size += stats["size_bytes"] + int(metadata.get("size_bytes", 0))
        count += stats["count"]
    return size / count if count else None


def synthesis_bytes(out: str, done: set[int], todo: list[ShardItem], cfg: SynthesisConfig,
                    image_size: int) -> tuple[int, int]:
    """The samples the shards ``todo`` will hold, and about how many bytes they take."""
    samples = sum(len(planned_keys(cfg, item.identities)) for item in todo)
    measured = measured_sample_bytes(out, done)
    if measured is not None:
        return samples, math.ceil(samples * measured)
    sample = shard_sample_bytes(jpeg_bytes(image_size, cfg.jpeg_quality))
    return samples, samples * sample + len(todo) * SHARD_FIXED_BYTES


@contextlib.contextmanager
def synthesis_space(out: str, done: set[int], todo: list[ShardItem], cfg: SynthesisConfig,
                    image_size: int) -> Iterator[None]:
    """Around the pool that writes the shards ``todo``: refused at once when the disk under
    ``out`` lacks the space they need, and a full disk on the way named with that space
    (:func:`factory.storage.space_for`)."""
    samples, needed = synthesis_bytes(out, done, todo, cfg, image_size)
    what = (f"the {len(todo)} shard{'s' if len(todo) != 1 else ''} of {samples:,} samples "
            "left to write")
    with storage.space_for(out, needed, what):
        yield
