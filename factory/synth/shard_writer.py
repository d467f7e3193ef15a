"""Writing one sampled shard's files: its identity centers, its tar, its per-sample Parquet
metadata (:mod:`factory.formats.shard_metadata`), then its stats record.

The order is the dataset's completeness rule (:mod:`factory.synth.reader`): the stats file goes
last, so a shard whose writer was killed is never taken for complete, and every other file is
written to a temporary name and renamed. The stats record the Parquet file's rows, size and
sha256 beside the tar's. The pool's actors and its encoding stage (:mod:`factory.synth.pool`)
and the benchmark's single-process loop all write through here, so they write the same bytes.
A rerun that finds a complete shard's Parquet file lost or changed writes it again from the
tar (:func:`rewrite_metadata`): every column is read from the tar, so that gives the file the
shard was written with, without sampling the shard again.
"""

from __future__ import annotations

import io
import json

import numpy as np

from factory import storage
from factory.checkpoints.generator import LoadedGenerator
from factory.config import SynthesisConfig
from factory.formats.dataset import FaceDataset
from factory.formats.shard_metadata import metadata_table, metadata_uri, write_metadata
from factory.formats.shards import SHARD_DIR, scan_shard, shard_name, write_shard
from factory.models.inference import InferenceSettings
from factory.synth.layout import centers_uri, stats_uri
from factory.synth.plan import ShardItem
from factory.synth.reader import read_stats
from factory.synth.sampler import SampledShard, sample_shard


def write_sampled(out: str, shard: int, sampled: SampledShard) -> int:
    """Write a sampled, encoded shard: centers, the tar, its Parquet metadata, then the stats
    file that marks it complete. Returns the samples written."""
    buffer = io.BytesIO()
    np.save(buffer, sampled.centers)
    storage.write_bytes(centers_uri(out, shard), buffer.getvalue())
    uri = storage.join(out, SHARD_DIR, shard_name(shard))
    written = write_shard(uri, sampled.samples)
    metadata = write_metadata(metadata_uri(out, shard),
                              metadata_table(shard, written.located, uri))
    stats = {"shard": shard_name(shard), "count": written.count, "sha256": written.sha256,
             "size_bytes": written.size_bytes, "metadata": metadata.record(),
             "labels": sampled.labels,
             "real_images": sum(1 for s in sampled.samples if s.meta["real"]),
             "histogram_inquiry": sampled.histogram_inquiry,
             "histogram_center": sampled.histogram_center}
    storage.write_text(stats_uri(out, shard), json.dumps(stats))
    return written.count


def rewrite_metadata(out: str, shard: int) -> None:
    """Write complete shard ``shard``'s Parquet metadata again from its tar (already checked
    against its stats), then its stats file with the new file's record."""
    uri = storage.join(out, SHARD_DIR, shard_name(shard))
    metadata = write_metadata(metadata_uri(out, shard),
                              metadata_table(shard, scan_shard(uri).samples, uri))
    stats = read_stats(out, shard)
    storage.write_text(stats_uri(out, shard), json.dumps({**stats, "metadata": metadata.record()}))


def write_sampled_shard(out: str, shard: int, generator: LoadedGenerator, item: ShardItem,
                        cfg: SynthesisConfig, settings: InferenceSettings,
                        inquiries: FaceDataset | None = None) -> int:
    """Sample one shard in this process and write it (the benchmark's plain loop)."""
    return write_sampled(out, shard, sample_shard(generator, item, cfg, settings, inquiries))
