"""Sample one shard: every image of its identities, their similarities, their shard records.

Plain torch (no Ray): the actor pool and the benchmark's single-process loop both call
:func:`sample_shard`, so they run exactly the same model, batches and sampler. Within a shard the
samples are taken in plan order and cut into fixed batches, so a rerun feeds the model the same
batches and, on the same machine, produces the same bytes. While the model samples a batch, one
worker thread JPEG-encodes the previous one (Pillow releases the GIL while it encodes), so the
accelerator does not wait for the CPU's part of the work; or, with ``encode=False``, the shard
keeps its pixels and :func:`encode_samples` encodes them later, elsewhere (the pool's separate
CPU stage, ``synthesis.actors.encode: stage``), giving the same bytes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch

from factory.config import SynthesisConfig
from factory.eval.compliance_curve import m_axis
from factory.formats.dataset import FaceDataset
from factory.formats.images import encode_jpeg
from factory.formats.shards import ShardSample
from factory.models.identity import inquiry_tensor
from factory.models.inference import InferenceSettings
from factory.models.sampling import (
    autocast_context,
    guidance_options,
    sample_images,
    to_uint8,
)
from factory.synth.layout import HISTOGRAM_EDGES
from factory.synth.plan import (
    PlannedIdentity,
    ShardItem,
    inquiry_copy_key,
    sample_key,
    sample_m,
    sample_seed,
)
from factory.checkpoints.generator import LoadedGenerator

@dataclass
class SampledShard:
    """A shard's records plus what the manifest and the privacy check need of it."""

    samples: list[ShardSample]
    labels: list[int]
    centers: np.ndarray
    """``[identities, dim]`` unit-length center of each identity's synthetic samples."""
    histogram_inquiry: list[int]
    histogram_center: list[int]
    pixels: list[np.ndarray] | None = None
    """Each sample's ``[H, W, 3]`` uint8 image while it is not encoded yet (``encode=False``):
    the samples' ``jpg`` is empty until :func:`encode_samples` fills it."""


def checkpoint_id(uri: str, meta: dict) -> str:
    """How a sample names the model that made it: checkpoint URI and training step (from its
    ``generator.json``)."""
    return f"{uri}@step{meta.get('step', '?')}"


def _mixup(identity: PlannedIdentity) -> dict | None:
    """The json ``mixup`` record: the partner, phi, both parents' labels and the labelling."""
    if identity.partner is None:
        return None
    return {"partner": identity.partner, "phi": identity.phi, "parents": identity.parents,
            "labels": identity.mixup_labels}


def encode_batch(pixels: np.ndarray | list[np.ndarray], quality: int) -> list[bytes]:
    """JPEG bytes of each ``[H, W, 3]`` uint8 image of a batch."""
    return [encode_jpeg(image, quality) for image in pixels]


def encode_samples(shard: SampledShard, quality: int) -> SampledShard:
    """The shard with every sample's JPEG bytes, from the pixels it kept (``encode=False``)."""
    if shard.pixels is None:
        return shard
    jpegs = encode_batch(shard.pixels, quality)
    samples = [replace(sample, jpg=data) for sample, data in zip(shard.samples, jpegs)]
    return replace(shard, samples=samples, pixels=None)


@torch.inference_mode()
def sample_shard(generator: LoadedGenerator, item: ShardItem, cfg: SynthesisConfig,
                 settings: InferenceSettings, inquiries: FaceDataset | None = None,
                 encode: bool = True) -> SampledShard:
    """Sample, embed and encode every image of ``item``'s identities.

    ``settings`` are what :func:`factory.models.inference.prepare` resolved for the generator
    on its device. The inquiry dataset is read only when ``cfg.include_inquiry_images`` is on,
    to copy each identity's real inquiry image into the shard. ``encode=False`` leaves the
    JPEG encoding to :func:`encode_samples` (the shard keeps its pixels).
    """
    device = torch.device(settings.device)
    rows = [(position, index) for position in range(len(item.identities))
            for index in range(cfg.images_per_identity)]
    embeddings = torch.tensor(item.embeddings(), dtype=torch.float32, device=device)
    axis = m_axis(cfg.m, cfg.sampling, generator.uri)  # targets on a measured axis -> m
    targets = [sample_m(cfg.m, cfg.seed, item.identities[p].label, i) for p, i in rows]
    m_values = [axis.requested(target) for target in targets]
    seeds = [sample_seed(cfg.seed, item.identities[p].label, i) for p, i in rows]
    batches, measured = [], []  # per batch: the future of its JPEG bytes, or its pixels
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jpeg") as jpeg:
        for start in range(0, len(rows), settings.batch_size):
            chunk = slice(start, start + settings.batch_size)
            positions = torch.tensor([p for p, _ in rows[chunk]], device=device)
            samples = sample_images(
                generator.model, generator.scheduler, embeddings[positions],
                torch.tensor(m_values[chunk], dtype=torch.float32, device=device), seeds[chunk],
                generator.image_size, cfg.sampling.steps, cfg.sampling.eta,
                cfg.sampling.identity_handoff, generator.encoder, solver=cfg.sampling.solver,
                **guidance_options(cfg.sampling), **settings.sampler_options())
            with autocast_context(device, settings.autocast):
                measured.append(generator.encoder(samples).float())
            pixels = to_uint8(samples).numpy()
            batches.append(jpeg.submit(encode_batch, pixels, cfg.jpeg_quality) if encode
                           else list(pixels))
        images = [image for batch in batches
                  for image in (batch.result() if encode else batch)]
    sample_embeddings = torch.cat(measured)
    owner = torch.tensor([p for p, _ in rows], device=device)
    centers = torch.nn.functional.normalize(
        torch.stack([sample_embeddings[owner == p].mean(0) for p in range(len(item.identities))]),
        dim=-1)
    to_inquiry = (sample_embeddings * embeddings[owner]).sum(-1).cpu().numpy()
    to_center = (sample_embeddings * centers[owner]).sum(-1).cpu().numpy()

    common = {"generator": checkpoint_id(generator.uri, generator.meta),
              "sampler": cfg.sampling.solver,
              "steps": cfg.sampling.steps, "eta": cfg.sampling.eta,
              "identity_handoff": cfg.sampling.identity_handoff,
              "guidance_scale": cfg.sampling.guidance_scale,
              "guidance_interval": list(cfg.sampling.guidance_interval),
              "inference": settings.record()}
    records: list[ShardSample] = []
    payloads: list[bytes | np.ndarray] = []  # each record's JPEG bytes, or pixels to encode later
    for row, (position, index) in enumerate(rows):
        identity = item.identities[position]
        meta = {"label": identity.label, "inquiry": identity.inquiry, "m": m_values[row],
                "similarity_inquiry": round(float(to_inquiry[row]), 6),
                "similarity_center": round(float(to_center[row]), 6), "seed": seeds[row],
                "mixup": _mixup(identity), "real": False, **axis.record(targets[row]),
                **common}
        records.append(ShardSample(sample_key(identity.label, index), b"", identity.label, meta))
        payloads.append(images[row])
        if index == cfg.images_per_identity - 1 and cfg.include_inquiry_images:
            for copy, image in _inquiry_copy(generator, identity, inquiries, centers[position],
                                             device, settings.autocast):
                records.append(copy)
                payloads.append(encode_jpeg(image, cfg.jpeg_quality) if encode else image)
    if encode:
        records = [replace(record, jpg=data) for record, data in zip(records, payloads)]
    return SampledShard(
        samples=records, labels=[identity.label for identity in item.identities],
        centers=centers.cpu().numpy().astype(np.float32),
        histogram_inquiry=np.histogram(to_inquiry, HISTOGRAM_EDGES)[0].tolist(),
        histogram_center=np.histogram(to_center, HISTOGRAM_EDGES)[0].tolist(),
        pixels=None if encode else payloads,
    )


def _inquiry_copy(generator: LoadedGenerator, identity: PlannedIdentity,
                  inquiries: FaceDataset | None, center: torch.Tensor, device: torch.device,
                  autocast: torch.dtype | None) -> list[tuple[ShardSample, np.ndarray]]:
    """The real inquiry image as one more sample of its identity (the anchors' oversampling),
    marked ``real: true``, with its pixels (not encoded yet); mixup identities have no image
    and get none."""
    if identity.image_index is None:
        return []
    if inquiries is None:
        raise ValueError("include_inquiry_images needs the inquiry dataset")
    image = inquiries.image(identity.image_index)
    with autocast_context(device, autocast):
        embedding = generator.encoder(
            inquiry_tensor(image[None], generator.image_size).to(device))[0].float()
    meta = {"label": identity.label, "inquiry": identity.inquiry, "m": 1.0,
            "similarity_inquiry": 1.0,
            "similarity_center": round(float(embedding @ center), 6), "seed": None,
            "mixup": None, "real": True, "generator": None, "sampler": None, "steps": None}
    return [(ShardSample(inquiry_copy_key(identity.label), b"", identity.label, meta), image)]
