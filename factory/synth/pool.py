"""The Ray Data actor pool that samples and writes a synthesis's shards.

The driver (:mod:`factory.synth.synthesize`) streams its work items, one per shard (identity
records plus their embeddings as an array), to a pool of :class:`ShardSynthesizer` actors. Each
actor loads the generator and E_id once, samples a whole shard in fixed batches, measures every
sample's similarity to its inquiry embedding and to its identity center in the same pass, and
writes the shard (:mod:`factory.synth.shard_writer`); with ``synthesis.actors.encode: stage``
the actor hands the sampled shard, pixels and all, to a separate CPU stage
(:func:`encode_and_write`) that encodes and writes it, so the actor goes on to its next shard.
:func:`run_actor_pool` runs the pool and says where its time went (:class:`PoolRun`).
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from factory import layout
from factory.checkpoints.generator import load_generator
from factory.config import ActorsConfig, FactoryConfig, SynthesisConfig
from factory.formats.dataset import open_dataset
from factory.models.inference import prepare
from factory.runtime import init_ray, quiet_ray_data
from factory.synth.plan import ShardItem
from factory.synth.sampler import encode_samples, sample_shard
from factory.synth.shard_writer import write_sampled


def torch_threads(cpus: float, threads: int) -> int:
    """An actor's torch threads: ``threads`` when set, else one per CPU it was given."""
    return threads or max(1, int(round(cpus)))


def actor_device(gpus: float) -> torch.device:
    """A GPU when the actor was given one and CUDA is there; the CPU otherwise."""
    return torch.device("cuda" if gpus > 0 and torch.cuda.is_available() else "cpu")


class ShardSynthesizer:
    """The Ray Data actor: loads the generator once, then turns work items into shards, or
    (``actors.encode: stage``) into sampled shards with their pixels, pickled, for
    :func:`encode_and_write`."""

    def __init__(self, config: dict[str, Any], checkpoint: str, out: str, inquiry_uri: str):
        self.cfg = SynthesisConfig.model_validate(config)
        torch.set_num_threads(torch_threads(self.cfg.actors.cpus_per_actor,
                                            self.cfg.actors.threads_per_actor))
        self.generator = load_generator(checkpoint)
        self.settings = prepare(self.generator, self.cfg.sampling,
                                actor_device(self.cfg.actors.gpus_per_actor))
        self.out = out
        self.inquiries = open_dataset(inquiry_uri) if self.cfg.include_inquiry_images else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        in_actor = self.cfg.actors.encode == "thread"
        shards, results, seconds, began = [], [], [], []
        for shard, item, embeddings in zip(batch["shard"], batch["item"], batch["embeddings"]):
            began.append(time.time())  # wall clock: the driver compares it with its own
            started = time.perf_counter()
            sampled = sample_shard(self.generator, ShardItem.from_row(shard, item, embeddings),
                                   self.cfg, self.settings, self.inquiries, encode=in_actor)
            results.append(write_sampled(self.out, int(shard), sampled) if in_actor
                           else pickle.dumps(sampled, protocol=pickle.HIGHEST_PROTOCOL))
            shards.append(int(shard))
            seconds.append(time.perf_counter() - started)
        column = (("images", np.array(results)) if in_actor
                  else ("sampled", np.array(results, dtype=object)))
        return {"shard": np.array(shards), column[0]: column[1], "seconds": np.array(seconds),
                "began": np.array(began)}


def encode_and_write(batch: dict[str, np.ndarray], out: str, quality: int
                     ) -> dict[str, np.ndarray]:
    """The CPU stage of ``actors.encode: stage``: JPEG-encode the sampled shards the actors
    handed over and write them; its time is added to the shard's."""
    images, seconds = [], []
    for shard, sampled, sampling_seconds in zip(batch["shard"], batch["sampled"],
                                                batch["seconds"]):
        started = time.perf_counter()
        images.append(write_sampled(out, int(shard),
                                    encode_samples(pickle.loads(sampled), quality)))
        seconds.append(float(sampling_seconds) + time.perf_counter() - started)
    return {"shard": batch["shard"], "images": np.array(images), "seconds": np.array(seconds),
            "began": batch["began"]}


def actor_pool(actors: ActorsConfig, shards: int):
    """A fixed ``ActorPoolStrategy``, or an autoscaling one for a [min, max] range; never more
    actors than shards to write.

    One shard in flight per actor: Ray Data would otherwise queue up to four on the first actor
    that is ready while the others are still starting (importing torch, loading the model), and
    with few shards left (a resume, the last round) one actor wrote them one after another while
    the rest idled. A shard is minutes of work, so there is nothing to gain from queueing."""
    import ray

    low, high = (min(size, shards) for size in actors.size_range())
    if low == high:
        return ray.data.ActorPoolStrategy(size=low, max_tasks_in_flight_per_actor=1)
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high,
                                      max_tasks_in_flight_per_actor=1)


def pool_text(actors: ActorsConfig) -> str:
    """The pool's size as the driver prints it: ``2``, or ``1 to 4, autoscaling``."""
    low, high = actors.size_range()
    return str(low) if low == high else f"{low} to {high}, autoscaling"


@dataclass
class PoolRun:
    """Where an actor pool's time went: all of it, the part actors spent inside shards (summed
    over actors), and its start-up, from asking for the pool to the moment the first shard
    began (Ray Data's executor, the actor processes importing torch and loading the model).
    The start-up is read from the shards' own start times: Ray Data may hand the first result
    over only with the next, so the first result's arrival would overstate it."""

    images: int
    seconds: float
    shard_seconds: float
    startup_seconds: float


def run_actor_pool(config: FactoryConfig, todo: list[ShardItem], checkpoint: str, out: str,
                   cli_address: str | None) -> PoolRun:
    """Stream ``todo`` through the actor pool and time it."""
    import ray

    cfg = config.synthesis
    init_ray(config.runtime, cli_address)
    quiet_ray_data()  # the tqdm bar below is this stage's one progress display
    dataset = ray.data.from_items([item.to_row() for item in todo],
                                  override_num_blocks=len(todo))
    resources = {"num_cpus": cfg.actors.cpus_per_actor}
    if cfg.actors.gpus_per_actor > 0:
        resources["num_gpus"] = cfg.actors.gpus_per_actor
    results = dataset.map_batches(
        ShardSynthesizer, batch_size=1, batch_format="numpy",
        compute=actor_pool(cfg.actors, len(todo)),
        fn_constructor_kwargs={"config": cfg.model_dump(mode="json"), "checkpoint": checkpoint,
                               "out": out, "inquiry_uri": layout.synthesis_inquiry_uri(config)},
        **resources,
    )
    if cfg.actors.encode == "stage":
        results = results.map_batches(encode_and_write, batch_size=1, batch_format="numpy",
                                      num_cpus=cfg.actors.encode_cpus,
                                      fn_kwargs={"out": out, "quality": cfg.jpeg_quality})
    started, asked = time.perf_counter(), time.time()
    images, shard_seconds, first_began = 0, 0.0, float("inf")
    with tqdm(total=len(todo), desc="synthesize", unit="shard") as progress:
        for row in results.iter_rows():
            images += int(row["images"])
            shard_seconds += float(row["seconds"])
            first_began = min(first_began, float(row["began"]))
            elapsed = time.perf_counter() - started
            progress.set_postfix(images=images, images_per_s=f"{images / elapsed:.1f}")
            progress.update(1)
    return PoolRun(images, time.perf_counter() - started, shard_seconds,
                   max(0.0, first_began - asked))
