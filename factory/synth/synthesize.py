"""``factory synthesize``: the plan fanned out over a Ray Data actor pool into WebDataset shards.

The driver checks the generator checkpoint without loading its weights, has the inquiry
embeddings computed by a Ray Data stage on the actors' resources (:mod:`factory.synth.inquiries`),
plans (identity mixup, shard assignment), skips shards a previous run finished, has the actor
pool (:mod:`factory.synth.pool`) sample and write the rest, and writes the manifest. A shard
counts as done only when its stats file exists, which is written last
(:mod:`factory.synth.shard_writer`), so a killed run leaves nothing half-done under a final name
and a rerun writes exactly the planned keys. A rerun does not trust those markers alone: it
checks each complete shard against its stats (:mod:`factory.synth.reader`: size, sha256, a
loadable centers file) and writes a damaged one again; a sound shard whose Parquet metadata is
missing or changed (or that was written before those files existed) only has that file written
again from its tar (:func:`~factory.synth.shard_writer.rewrite_metadata`). The driver only ever
holds the plan and one small stats record per shard, so its memory does not grow with the
number of images.

Output layout under ``synthesis.out``::

    shards/shard-000000.tar ...     the samples (webdataset: key.jpg, key.cls, key.json)
    shards/shard-000000.parquet     one row per sample of the shard beside it: its metadata
                                    and where its image lies (factory.formats.shard_metadata)
    stats/shard-000000.json         count, sha256, labels, similarity histograms of a shard
    stats/shard-000000.centers.npy  the synthetic identity centers (for the privacy check)
    plan.json                       what this directory is a dataset of (checked on rerun)
    plan_identities.npz             the planned identities and embeddings (a rerun resumes
                                    with them: the inquiries are embedded once)
    manifest.json                   config, code version, generator and E_id, counts,
                                    per-shard counts and checksums, the Parquet files' rows
                                    and checksums, histograms of the requested m and the
                                    measured similarities
    similarity_histogram.png        similarity to inquiry and to center, all samples
    README.md                       the dataset card (factory.synth.card), rewritten by analyze
    .facefactory.lock               only while a run writes here: which one (factory.locking)
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from factory import layout, storage
from factory.checkpoints.encoder import checkpoint_meta, load_checkpoint_encoder
from factory.checkpoints.generator import LoadedGenerator, check_generator
from factory.config import FactoryConfig, parse_fpr
from factory.errors import UserError
from factory.eval.compliance_curve import m_axis
from factory.eval.threshold import encoder_threshold
from factory.formats.shard_metadata import MetadataWritten, metadata_listing, metadata_name
from factory.formats.shards import SHARD_DIR, refuse_inside_dataset, shard_name, shard_pattern
from factory.locking import hold_lock
from factory.provenance import code_version, package_versions, platform_record
from factory.runtime import mlflow_tracking_uri
from factory.synth.card import write_card
from factory.synth.figures import similarity_histogram_png
from factory.synth.inquiries import embed_inquiries_here, embed_inquiries_on_actors
from factory.synth.layout import (
    HISTOGRAM_EDGES,
    HISTOGRAM_FILE,
    IDENTITIES_FILE,
    MANIFEST_FILE,
    PLAN_FILE,
    STATS_DIR,
    stats_uri,
)
from factory.synth.plan import (
    PlannedIdentity,
    identities_from_bytes,
    identities_to_bytes,
    plan_identities,
    planned_m,
    shard_items,
)
from factory.synth.pool import PoolRun, pool_text, run_actor_pool
from factory.synth.reader import complete_shards, damaged_shards, read_stats, stale_metadata
from factory.synth.sampler import checkpoint_id
from factory.synth.shard_writer import rewrite_metadata
from factory.synth.space import synthesis_space
from factory.tracking import RunTracker

LEGACY_SAMPLING = {"solver": "ddim", "precision": "fp32", "channels_last": "off",
                   "compile": False, "guidance_scale": 1.0, "guidance_interval": [0.0, 1.0]}
"""How plans written before these sampling settings existed sampled (always like this)."""
LEGACY_M = {"axis": "m"}
"""How plans written before ``synthesis.m.axis`` existed named their m (always as m)."""


def inquiry_threshold(config: FactoryConfig, generator: LoadedGenerator | None = None
                      ) -> dict[str, Any]:
    """The inquiry filter's threshold: ``inquiry.max_similarity`` itself, or for ``fpr:<rate>``
    E_id's impostor threshold at that rate on the threshold benchmarks (with what it came
    from). Only then is E_id loaded here (the generator's own when it is loaded anyway)."""
    spec = config.synthesis.inquiry.max_similarity
    if not isinstance(spec, str):
        return {"max_similarity": spec, "threshold": float(spec)}
    checkpoint = layout.synthesis_checkpoint_uri(config)
    encoder = generator.encoder if generator else load_checkpoint_encoder(checkpoint)
    size = generator.image_size if generator else int(checkpoint_meta(checkpoint)["image_size"])
    estimate = encoder_threshold(config, encoder, size, parse_fpr(spec))
    return {"max_similarity": spec, **estimate.as_dict()}


def make_plan(config: FactoryConfig, generator: LoadedGenerator | None = None,
              cli_address: str | None = None) -> tuple[list[PlannedIdentity], dict[str, Any]]:
    """The identities of this run, from the inquiry dataset embedded by the generator's E_id (by
    a Ray Data stage on the actors' resources, :mod:`factory.synth.inquiries`, or in this
    process when a loaded ``generator`` is given), and the inquiry filter's record (threshold,
    candidates, how many passed), which is printed."""
    cfg = config.synthesis
    inquiries = (embed_inquiries_here(config, generator) if generator is not None
                 else embed_inquiries_on_actors(config, cli_address))
    record = inquiry_threshold(config, generator)
    identities = plan_identities(cfg, inquiries.embeddings, inquiries.names, inquiries.indices,
                                 record["threshold"])
    kept = sum(1 for identity in identities if identity.partner is None)
    record.update(candidates=len(inquiries.names), asked=cfg.inquiry.identities, passed=kept)
    source = ("" if record["max_similarity"] == record["threshold"] else
              f" = E_id's {record['max_similarity']} threshold over "
              f"{record['impostor_pairs']:,} impostor pairs of {record['images']} validation "
              "images")
    print(f"synthesis: inquiry filter: pairwise E_id cosine < {record['threshold']:.4f}{source}; "
          f"{kept} of {len(inquiries.names)} inquiry identities pass (asked for "
          f"{cfg.inquiry.identities})")
    return identities, record


def plan_record(config: FactoryConfig, meta: dict[str, Any],
                identities: list[PlannedIdentity]) -> dict[str, Any]:
    """What makes this directory this dataset; a rerun must match it to resume."""
    cfg = config.synthesis.model_dump(mode="json")
    # where it is written and how fast, not what it makes: a moved dataset still resumes
    del cfg["out"], cfg["actors"], cfg["privacy"]
    if not isinstance(config.synthesis.inquiry.max_similarity, str):
        del cfg["threshold_benchmarks"]  # used by an 'fpr:' filter only
    return {"synthesis": cfg,
            "generator": checkpoint_id(layout.synthesis_checkpoint_uri(config), meta),
            "inquiry_data": layout.synthesis_inquiry_uri(config), "identities": len(identities),
            "shards": len(shard_items(identities, config.synthesis.identities_per_shard))}


def previous_plan(out: str) -> dict[str, Any] | None:
    """The plan record a previous run left in ``out`` (None: a fresh output folder); read
    before planning, so a damaged one stops the run before any work."""
    uri = storage.join(out, PLAN_FILE)
    if not storage.exists(uri):
        return None
    previous = storage.read_json_object(uri)
    if isinstance(previous.get("synthesis"), dict):
        previous["synthesis"].pop("out", None)  # earlier versions recorded the location
        for section, legacy in (("sampling", LEGACY_SAMPLING), ("m", LEGACY_M)):
            if isinstance(previous["synthesis"].get(section), dict):
                for key, value in legacy.items():
                    previous["synthesis"][section].setdefault(key, value)
    return previous


def resume_or_make_plan(config: FactoryConfig, out: str, meta: dict[str, Any],
                        previous: dict[str, Any] | None, cli_address: str | None
                        ) -> tuple[list[PlannedIdentity], dict[str, Any]]:
    """The identities and inquiry filter record a previous run saved in ``out``, when its plan
    is this config's; otherwise :func:`make_plan`'s, saved for the next rerun.

    A rerun then skips the inquiry embedding stage (an actor start-up here, minutes for a
    large inquiry set on CPUs), and plans exactly what the first run planned even on other
    hardware, where E_id's last bits, and so a borderline inquiry filter decision, could
    differ. An unreadable saved file is ignored: the plan is made again and checked as before.
    """
    uri = storage.join(out, IDENTITIES_FILE)
    if previous is not None and storage.exists(uri):
        try:
            identities, inquiry_filter = identities_from_bytes(storage.read_bytes(uri))
        except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile):
            identities = []
        if identities and plan_record(config, meta, identities) == previous:
            print(f"synthesis: resuming the plan saved in {out} ({len(identities)} identities; "
                  "the inquiries are not embedded again)")
            return identities, inquiry_filter
    identities, inquiry_filter = make_plan(config, cli_address=cli_address)
    claim_output(out, plan_record(config, meta, identities), previous)
    storage.write_bytes(uri, identities_to_bytes(identities, inquiry_filter))
    return identities, inquiry_filter


def claim_output(out: str, record: dict[str, Any], previous: dict[str, Any] | None) -> None:
    """Write the plan record, or check the one a previous run left matches it."""
    if previous is None:
        storage.write_text(storage.join(out, PLAN_FILE), json.dumps(record, indent=2))
    elif previous != record:
        changed = sorted(k for k in record if previous.get(k) != record[k])
        raise UserError(f"{out}: holds a dataset with another plan ({', '.join(changed)} "
                        "differ); choose another synthesis.out or remove it")


def remove_stale_temporaries(out: str) -> int:
    """Delete temporary files a killed run left (they never carry a final name).

    A writer of the killed run can outlive its driver by a moment (its worker exits when it
    notices the raylet is gone) and rename or delete its own temporary between the listing and
    the delete here; a temporary that is already gone is not an error.
    """
    removed = 0
    for folder in (SHARD_DIR, STATS_DIR):
        directory = storage.join(out, folder)
        if not storage.is_dir(directory):
            continue
        filesystem, _ = storage.resolve(directory)
        for name in storage.listdir(directory):
            if name.startswith(storage.TEMP_MARKER):
                with contextlib.suppress(FileNotFoundError):
                    filesystem.delete_file(storage.resolve(storage.join(directory, name))[1])
                    removed += 1
    return removed


def build_manifest(config: FactoryConfig, out: str, record: dict[str, Any],
                   meta: dict[str, Any],
                   identities: list[PlannedIdentity]) -> dict[str, Any]:
    """The dataset's manifest, assembled from every shard's stats file, the generator's record
    (its E_id and training data) and the plan's requested m."""
    shards = [read_stats(out, index) for index in range(record["shards"])]
    inquiry = np.sum([s["histogram_inquiry"] for s in shards], axis=0).astype(int).tolist()
    center = np.sum([s["histogram_center"] for s in shards], axis=0).astype(int).tolist()
    samples = sum(s["count"] for s in shards)
    real = sum(s["real_images"] for s in shards)
    axis = m_axis(config.synthesis.m, config.synthesis.sampling,
                  layout.synthesis_checkpoint_uri(config))
    return {
        "format": "facefactory-webdataset/1",
        "shard_pattern": f"{SHARD_DIR}/{shard_pattern(len(shards))}",
        "code_version": code_version(),
        "packages": package_versions(),
        "platform": platform_record(),
        "generator": record["generator"],
        "generator_uri": layout.synthesis_checkpoint_uri(config),
        "generator_checkpoint": {key: meta.get(key) for key in (
            "step", "image_size", "identity_encoder", "data", "code_version", "objective")},
        "counts": {"identities": record["identities"],
                   "mixup_identities": config.synthesis.inquiry.mixup_identities,
                   "mixup_labels": config.synthesis.inquiry.mixup_labels,
                   "samples": samples, "synthetic_images": samples - real,
                   "real_images": real, "shards": len(shards)},
        "contains_real_images": real > 0,
        "shards": [{k: s[k] for k in ("shard", "count", "sha256", "size_bytes")}
                   for s in shards],
        "metadata": metadata_listing([MetadataWritten(**s["metadata"]) for s in shards]),
        "histograms": {"edges": HISTOGRAM_EDGES.tolist(), "similarity_inquiry": inquiry,
                       "similarity_center": center,
                       "m": np.histogram(planned_m(config.synthesis, identities, axis.requested),
                                         HISTOGRAM_EDGES)[0].tolist()},
        "config": config.model_dump(mode="json"),
    }


def _kept_privacy(out: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """The privacy record ``factory analyze`` added to an earlier manifest of these very shards
    (same checksums), so that a rerun's manifest keeps it; empty otherwise."""
    uri = storage.join(out, MANIFEST_FILE)
    if not storage.exists(uri):
        return {}
    previous = storage.read_json_object(uri)
    if "privacy" in previous and previous.get("shards") == manifest["shards"]:
        return {"privacy": previous["privacy"]}
    return {}


@dataclass
class SynthesisRun:
    """What a synthesis wrote, and where its time went besides the pool: checking and planning
    (the inquiry embedding stage, unless a rerun resumes the saved plan) before it, and
    :func:`finish_dataset` after it."""

    out: str
    manifest: dict[str, Any]
    images_written: int
    images_per_s: float
    pool: PoolRun | None = None
    plan_seconds: float = 0.0
    finish_seconds: float = 0.0


def finish_dataset(config: FactoryConfig, meta: dict[str, Any],
                   identities: list[PlannedIdentity], inquiry_filter: dict[str, Any],
                   images_per_s: float) -> dict[str, Any]:
    """Once every shard is written: the manifest, the similarity histogram PNG, the MLflow run
    (config, counts, throughput, both files) and the dataset card; returns the manifest. The
    benchmark's plain loop ends with it too, so that both write the same dataset."""
    cfg, out = config.synthesis, layout.synthesis_out_uri(config)
    record = plan_record(config, meta, identities)
    manifest = build_manifest(config, out, record, meta, identities)
    manifest["inquiry_filter"] = inquiry_filter
    manifest.update(_kept_privacy(out, manifest))
    storage.write_text(storage.join(out, MANIFEST_FILE), json.dumps(manifest, indent=2))
    with tempfile.TemporaryDirectory() as scratch:
        histogram = similarity_histogram_png(manifest["histograms"],
                                             os.path.join(scratch, HISTOGRAM_FILE))
        with open(histogram, "rb") as stream:
            storage.write_bytes(storage.join(out, HISTOGRAM_FILE), stream.read())
        tracker = RunTracker(True, mlflow_tracking_uri(config.runtime), config.runtime.experiment,
                             config.runtime.mlflow_artifact_location)
        tracker.start(f"synthesize-{config.name}",
                      params={"synthesis": cfg.model_dump(mode="json"),
                              "generator": layout.synthesis_checkpoint_uri(config), "out": out},
                      tags={"code_version": manifest["code_version"], "stage": "synthesize"})
        tracker.log_metrics({**manifest["counts"], "images_per_s": images_per_s})
        manifest_path = os.path.join(scratch, MANIFEST_FILE)
        with open(manifest_path, "w") as stream:
            json.dump(manifest, stream, indent=2)
        tracker.log_artifact(manifest_path)
        tracker.log_artifact(histogram)
        tracker.end()
    write_card(out)
    return manifest


def synthesize(config: FactoryConfig, cli_address: str | None = None) -> SynthesisRun:
    """Plan, sample the shards a previous run did not finish, write the manifest; all of it
    holding the output's lock, so a second synthesis of the same output is refused at once."""
    started = time.perf_counter()
    cfg = config.synthesis
    out = layout.synthesis_out_uri(config)
    refuse_inside_dataset(out, "synthesis.out")
    with hold_lock(out, "synthesize"):  # before anything of a previous run is read
        storage.ensure_writable(out)
        checkpoint = layout.synthesis_checkpoint_uri(config)
        meta = check_generator(checkpoint)  # the actors load it; the driver only checks it
        m_axis(cfg.m, cfg.sampling, checkpoint)  # a measured target out of reach: refused now
        # what a previous run left is read (never changed) before the embedding stage runs
        previous = previous_plan(out)
        done = complete_shards(out)
        damaged = damaged_shards(out, done)
        stale = stale_metadata(out, done - set(damaged))
        identities, inquiry_filter = resume_or_make_plan(config, out, meta, previous, cli_address)
        record = plan_record(config, meta, identities)
        remove_stale_temporaries(out)
        for shard, reason in damaged.items():
            print(f"synthesis: {shard_name(shard)} is damaged ({reason}); writing it again")
            storage.delete(stats_uri(out, shard))  # the shard is no longer complete
            done.discard(shard)
        for shard, reason in stale.items():
            print(f"synthesis: {metadata_name(shard_name(shard))} ({reason}); writing it again "
                  "from its shard")
            rewrite_metadata(out, shard)
        todo = [item for item in shard_items(identities, cfg.identities_per_shard)
                if item.shard not in done]
        planned = time.perf_counter()
        print(f"synthesis: {record['identities']} identities x {cfg.images_per_identity} "
              f"images in {record['shards']} shards -> {out} ({len(todo)} to write, "
              f"{record['shards'] - len(todo)} already complete)")
        with synthesis_space(out, done, todo, cfg, int(meta["image_size"])):  # refused if no room
            pool = run_actor_pool(config, todo, checkpoint, out, cli_address) if todo else None
        # an actor lost mid-shard (a preempted node) leaves its temporary behind; its work item
        # was retried elsewhere, and with the pool finished no writer is left to own one
        remove_stale_temporaries(out)
        images, seconds = (pool.images, pool.seconds) if pool else (0, 0.0)
        rate = images / seconds if seconds else 0.0
        if images:
            print(f"synthesis: {images} images in {seconds:.1f} s ({rate:.1f} images/s, "
                  f"actors: {pool_text(cfg.actors)}; {pool.startup_seconds:.1f} s to start the "
                  f"pool, {pool.shard_seconds:.1f} actor-seconds in shards)")
        finishing = time.perf_counter()
        manifest = finish_dataset(config, meta, identities, inquiry_filter, rate)
        return SynthesisRun(out, manifest, images, rate, pool, planned - started,
                            time.perf_counter() - finishing)
