"""Writing one sampled shard's files: its identity centers, its tar, then its stats record.

The order is the dataset's completeness rule (:mod:`factory.synth.reader`): the stats file goes
last, so a shard whose writer was killed is never taken for complete, and the tar is written to
a temporary name and renamed. The pool's actors and its encoding stage
(:mod:`factory.synth.pool`) and the benchmark's single-process loop all write through here, so
they write the same bytes.
"""

from __future__ import annotations

import io
import json

import numpy as np

from factory import storage
from factory.checkpoints.generator import LoadedGenerator
from factory.config import SynthesisConfig
from factory.formats.dataset import FaceDataset
from factory.formats.shards import SHARD_DIR, shard_name, write_shard
from factory.models.inference import InferenceSettings
from factory.synth.layout import centers_uri, stats_uri
from factory.synth.plan import ShardItem
from factory.synth.sampler import SampledShard, sample_shard


def write_sampled(out: str, shard: int, sampled: SampledShard) -> int:
    """Write a sampled, encoded shard: centers, the tar, then the stats file that marks it
    complete. Returns the samples written."""
    buffer = io.BytesIO()
    np.save(buffer, sampled.centers)
    storage.write_bytes(centers_uri(out, shard), buffer.getvalue())
    written = write_shard(storage.join(out, SHARD_DIR, shard_name(shard)), sampled.samples)
    stats = {"shard": shard_name(shard), "count": written.count, "sha256": written.sha256,
             "size_bytes": written.size_bytes, "labels": sampled.labels,
             "real_images": sum(1 for s in sampled.samples if s.meta["real"]),
             "histogram_inquiry": sampled.histogram_inquiry,
             "histogram_center": sampled.histogram_center}
    storage.write_text(stats_uri(out, shard), json.dumps(stats))
    return written.count


def write_sampled_shard(out: str, shard: int, generator: LoadedGenerator, item: ShardItem,
                        cfg: SynthesisConfig, settings: InferenceSettings,
                        inquiries: FaceDataset | None = None) -> int:
    """Sample one shard in this process and write it (the benchmark's plain loop)."""
    return write_sampled(out, shard, sample_shard(generator, item, cfg, settings, inquiries))
