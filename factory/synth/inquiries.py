"""The inquiry embeddings a synthesis plan starts from, computed by a Ray Data stage.

Embedding every inquiry identity's first image with E_id is the one part of planning whose
cost grows with the inquiry set (10k CASIA identities take minutes on a CPU). It runs on the
synthesis actors' resources (``synthesis.actors``: CPUs, threads, a GPU where one is given),
each actor loading only E_id from the generator checkpoint, never the UNet. The driver sends
chunk numbers, not images, and receives one float32 ``[chunk, D]`` array per chunk, so it holds
the inquiry dataset's labels and the ``[identities, D]`` embedding matrix the plan is made from,
nothing else.

The chunks are exactly the batches the driver used to embed (``EMBED_BATCH`` consecutive
identities in label order), so the model sees the same batches and the plan, hence every
shard, stays byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from factory import layout
from factory.config import FactoryConfig
from factory.errors import UserError
from factory.formats.dataset import FaceDataset, open_dataset
from factory.models.identity import embedding_batches
from factory.runtime import init_ray, quiet_ray_data
from factory.checkpoints.encoder import checkpoint_meta, load_checkpoint_encoder

if TYPE_CHECKING:  # the UNet's loader imports diffusers, which an embedding actor never needs
    from factory.checkpoints.generator import LoadedGenerator

EMBED_BATCH = 256


@dataclass
class Inquiries:
    """The inquiry identities in label order: name, dataset index of the image used, and its
    unit-length E_id embedding (float64, rows in the same order)."""

    names: list[str]
    indices: list[int]
    embeddings: np.ndarray


def first_index_per_identity(dataset: FaceDataset) -> dict[int, int]:
    """label -> index of that identity's first image, in label order."""
    firsts: dict[int, int] = {}
    for index, label in enumerate(dataset.labels):
        firsts.setdefault(int(label), index)
    return dict(sorted(firsts.items()))


def identity_name(dataset: FaceDataset, label: int) -> str:
    names = getattr(dataset, "class_names", None)
    return str(names[label]) if names is not None else f"id{label}"


class InquiryEmbedder:
    """The Ray Data actor: E_id of the checkpoint on the actor's device; one chunk number in,
    that chunk's embeddings out. A user-fixable error (an unreadable image) travels back as
    text in the ``error`` column, so the driver can raise it as the one line it is."""

    def __init__(self, checkpoint: str, inquiry_uri: str, threads: int, gpus: float) -> None:
        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if gpus > 0 and torch.cuda.is_available() else "cpu")
        self.encoder = load_checkpoint_encoder(checkpoint).to(self.device)
        self.image_size = int(checkpoint_meta(checkpoint)["image_size"])
        self.dataset = open_dataset(inquiry_uri)
        self.indices = list(first_index_per_identity(self.dataset).values())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        chunks, arrays, errors = [], [], []
        for chunk in batch["chunk"]:
            start = int(chunk) * EMBED_BATCH
            try:
                arrays.append(self._embed(self.indices[start:start + EMBED_BATCH]))
                errors.append("")
            except UserError as exc:
                arrays.append(np.zeros((0, 0), np.float32))
                errors.append(str(exc))
            chunks.append(int(chunk))
        return {"chunk": np.array(chunks), "embeddings": arrays, "error": np.array(errors)}

    @torch.no_grad()
    def _embed(self, indices: list[int]) -> np.ndarray:
        (_, embeddings), = embedding_batches(self.encoder, self.image_size, self.dataset,
                                             indices, batch_size=len(indices))
        return embeddings.float().cpu().numpy()


def embed_inquiries_on_actors(config: FactoryConfig, cli_address: str | None = None
                              ) -> Inquiries:
    """E_id embeddings of every inquiry identity's first image, computed by an actor pool of
    :class:`InquiryEmbedder` on ``synthesis.actors``' resources."""
    import ray

    cfg = config.synthesis
    dataset = open_dataset(layout.synthesis_inquiry_uri(config))
    firsts = first_index_per_identity(dataset)
    if not firsts:
        raise UserError(f"{layout.synthesis_inquiry_uri(config)}: no inquiry identities")
    names = [identity_name(dataset, label) for label in firsts]
    chunks = -(-len(firsts) // EMBED_BATCH)
    init_ray(config.runtime, cli_address)
    quiet_ray_data()
    resources: dict[str, float] = {"num_cpus": cfg.actors.cpus_per_actor}
    if cfg.actors.gpus_per_actor > 0:
        resources["num_gpus"] = cfg.actors.gpus_per_actor
    threads = cfg.actors.threads_per_actor or max(1, int(round(cfg.actors.cpus_per_actor)))
    # from_items: the blocks are made here, so no read task competes for the actors' CPUs
    results = ray.data.from_items([{"chunk": chunk} for chunk in range(chunks)],
                                  override_num_blocks=chunks).map_batches(
        InquiryEmbedder, batch_size=1, batch_format="numpy",
        # a fixed pool of the range's upper end: the stage is short, scaling would not pay
        compute=ray.data.ActorPoolStrategy(size=min(cfg.actors.size_range()[1], chunks)),
        fn_constructor_kwargs={"checkpoint": layout.synthesis_checkpoint_uri(config),
                               "inquiry_uri": layout.synthesis_inquiry_uri(config),
                               "threads": threads, "gpus": cfg.actors.gpus_per_actor},
        **resources)
    embeddings: np.ndarray | None = None
    for row in results.iter_rows():
        if row["error"]:
            raise UserError(str(row["error"]))
        block = np.asarray(row["embeddings"], dtype=np.float64)
        if embeddings is None:
            embeddings = np.empty((len(firsts), block.shape[1]), np.float64)
        start = int(row["chunk"]) * EMBED_BATCH
        embeddings[start:start + len(block)] = block
    assert embeddings is not None  # at least one chunk, checked above
    return Inquiries(names, list(firsts.values()), embeddings)


def embed_inquiries_here(config: FactoryConfig, generator: LoadedGenerator) -> Inquiries:
    """The same as :func:`embed_inquiries_on_actors`, computed in this process with a loaded
    generator (the benchmark's Ray-free loop, and tests that check the two agree)."""
    dataset = open_dataset(layout.synthesis_inquiry_uri(config))
    firsts = first_index_per_identity(dataset)
    return Inquiries([identity_name(dataset, label) for label in firsts], list(firsts.values()),
                     embed_inquiries(generator, dataset, list(firsts.values())))


@torch.no_grad()
def embed_inquiries(generator: LoadedGenerator, dataset: FaceDataset, indices: list[int],
                    batch_size: int = EMBED_BATCH) -> np.ndarray:
    """In this process: unit-length E_id embeddings of the given images, as the generator is
    conditioned (for a caller that has loaded the generator anyway, like analyze)."""
    rows = [embeddings.numpy() for _, embeddings in
            embedding_batches(generator.encoder, generator.image_size, dataset, indices,
                              batch_size)]
    return np.concatenate(rows).astype(np.float64)
