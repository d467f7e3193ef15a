"""A real dataset as a pool of shards whose samples record their E_id similarity to their
identity center: what CemiFace's similarity-group study splits into groups.

Every image is embedded with the identity encoder, each identity's center is the normalised
mean of its embeddings, and each sample is written (re-encoded as JPEG) with ``label``,
``similarity_center`` and ``source_index``; ``m`` is null, since nothing was requested. Each
shard's tar and then its Parquet metadata (:mod:`factory.formats.shard_metadata`) are written
atomically; the Parquet file, written last, marks the shard complete, so a rerun skips exactly
those shards. The manifest comes last.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from factory import layout, storage
from factory.config import FactoryConfig, MeasuredPoolConfig
from factory.errors import UserError
from factory.formats.dataset import open_dataset
from factory.formats.images import encode_jpeg
from factory.formats.shard_metadata import (
    metadata_listing,
    metadata_table,
    metadata_uri,
    write_metadata,
    written_metadata,
)
from factory.formats.shards import SHARD_DIR, ShardSample, shard_name, write_shard
from factory.models.identity import IdentityEncoder, embedding_batches
from factory.provenance import code_version
from factory.synth.layout import MANIFEST_FILE
from factory.checkpoints.recognizer import load_identity_encoder
from factory.checkpoints.encoder import META_FILE, load_checkpoint_encoder


def is_generator_checkpoint(uri: str) -> bool:
    """A generator checkpoint carries its E_id: measuring with it is measuring with E_id."""
    return storage.exists(storage.join(uri, META_FILE))

JPEG_QUALITY = 95


def measured_similarities(encoder: IdentityEncoder, image_size: int, dataset,
                          batch_size: int) -> np.ndarray:
    """cos(E_id(x), center of x's identity) for every image, in index order."""
    embeddings = torch.cat([batch for _, batch in embedding_batches(
        encoder, image_size, dataset, range(len(dataset)), batch_size)])
    sums = torch.zeros(dataset.num_classes, embeddings.shape[1])
    sums.index_add_(0, torch.as_tensor(dataset.labels), embeddings)
    centers = torch.nn.functional.normalize(sums, dim=-1)
    return (embeddings * centers[torch.as_tensor(dataset.labels)]).sum(-1).numpy()


def measure_pool(config: FactoryConfig, out: str) -> dict:
    """Measure ``sweep.measure.data`` into shards at ``out``; returns the manifest."""
    cfg: MeasuredPoolConfig = config.sweep.measure
    encoder_uri = cfg.encoder or layout.recognizer_final_uri(config)
    if not storage.exists(encoder_uri):
        raise UserError(f"{encoder_uri}: identity encoder not found (train the recognizer "
                        "first, or set sweep.measure.encoder)")
    encoder = (load_checkpoint_encoder(encoder_uri) if is_generator_checkpoint(encoder_uri)
               else load_identity_encoder(encoder_uri, cfg.encoder_backbone))
    size = encoder.input_size
    dataset = open_dataset(cfg.data)
    print(f"== measuring {len(dataset)} images of {cfg.data} against their identity centers "
          f"({encoder_uri})")
    similarity = measured_similarities(encoder, size, dataset, cfg.batch_size)
    starts = range(0, len(dataset), cfg.samples_per_shard)
    shards, files = [], []
    for shard, start in enumerate(starts):
        uri = storage.join(out, SHARD_DIR, shard_name(shard))
        indices = range(start, min(start + cfg.samples_per_shard, len(dataset)))
        if storage.exists(metadata_uri(out, shard)):
            files.append(written_metadata(metadata_uri(out, shard)))
        else:
            written = write_shard(uri, [ShardSample(
                f"{index:09d}", encode_jpeg(dataset.image(index), JPEG_QUALITY),
                int(dataset.labels[index]),
                {"label": int(dataset.labels[index]), "m": None, "mixup": None,
                 "similarity_center": round(float(similarity[index]), 6),
                 "source_index": index}) for index in indices])
            files.append(write_metadata(metadata_uri(out, shard),
                                        metadata_table(shard, written.located, uri)))
        shards.append({"name": shard_name(shard), "samples": len(indices)})
    counts, edges = np.histogram(similarity, bins=20, range=(-1.0, 1.0))
    manifest = {
        "kind": "measured", "code_version": code_version(), "source": cfg.data,
        "encoder": encoder_uri, "config": config.sweep.measure.model_dump(mode="json"),
        "counts": {"samples": len(dataset), "identities": int(dataset.num_classes),
                   "shards": len(shards)},
        "shards": shards, "metadata": metadata_listing(files),
        "similarity_center": {"mean": float(similarity.mean()), "std": float(similarity.std()),
                              "histogram": counts.tolist(), "edges": edges.tolist()},
    }
    storage.write_text(storage.join(out, MANIFEST_FILE), json.dumps(manifest, indent=2))
    return manifest
