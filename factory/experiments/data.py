"""Make the datasets the studies train on, each once, under ``<workdir>/data/<key>``.

Every maker is resumable the way the stage it calls is (synthesis skips finished shards, the
measured pool skips finished shards, a real subset is written whole or not at all) and returns
at once when its dataset is complete, so an interrupted ``factory experiments`` picks up where
it stopped.
"""

from __future__ import annotations

import json

import numpy as np

from factory import layout, storage
from factory.checkpoints.recognizer import load_judge
from factory.config import FactoryConfig
from factory.errors import UserError
from factory.experiments.cells import Dataset, MeasuredSet, RealSet, SyntheticSet
from factory.formats.dataset import open_dataset
from factory.formats.recordio import write_insightface_rec
from factory.synth.judged import judged_inquiries
from factory.synth.measure import measure_pool
from factory.synth.layout import MANIFEST_FILE
from factory.synth.reader import read_manifest
from factory.synth.synthesize import synthesize

SUBSET_MARKER = "subset.json"
IDENTITIES_PER_SHARD = 10
"""Small shards, so that even the small variant's 60 identities give every actor of the pool
several shards (a shard is one actor's unit of work: 50-identity shards left one of two actors
idle for most of a 60-identity set)."""


def data_uri(config: FactoryConfig, dataset: Dataset) -> str:
    return storage.join(config.workdir, "data", dataset.folder)


def make_dataset(config: FactoryConfig, dataset: Dataset, cli_address: str | None) -> str:
    """The URI of ``dataset``, made first if it is not complete."""
    if isinstance(dataset, RealSet):
        return make_real_subset(config, dataset)
    if isinstance(dataset, MeasuredSet):
        return make_measured_set(config, dataset)
    return make_synthetic_set(config, dataset, cli_address)


def make_real_subset(config: FactoryConfig, subset: RealSet) -> str:
    """The first identities x images of the face world's training set as insightface RecordIO."""
    out = data_uri(config, subset)
    if storage.exists(storage.join(out, SUBSET_MARKER)):
        return out
    world = open_dataset(storage.join(layout.faceworld_uri(config), "train"))
    labels = np.asarray(world.labels)
    if subset.identities > world.num_classes:
        raise UserError(f"experiments (volumes, real_share): {subset.key} needs "
                        f"{subset.identities} identities; the face world has "
                        f"{world.num_classes} (faceworld.identities)")
    indices = [int(i) for label in range(subset.identities)
               for i in np.flatnonzero(labels == label)[:subset.images]]
    if len(indices) != subset.identities * subset.images:
        raise UserError(f"experiments (volumes, real_share): {subset.key} needs "
                        f"{subset.images} images per identity; the face world has fewer "
                        "(faceworld.images_per_identity)")
    size = world.image(0).shape[:2]
    write_insightface_rec(out, ((int(labels[i]), world.raw(i)) for i in indices),
                          num_images=len(indices), num_classes=subset.identities,
                          image_size=(int(size[0]), int(size[1])))
    storage.write_text(storage.join(out, SUBSET_MARKER), json.dumps(
        {"source": storage.join(layout.faceworld_uri(config), "train"),
         "identities": subset.identities, "images_per_identity": subset.images}))
    return out


def make_measured_set(config: FactoryConfig, measured: MeasuredSet) -> str:
    """The real subset measured with the judge (which trained on none of its images) into
    shards that record each sample's similarity to its identity center."""
    out = data_uri(config, measured)
    if storage.exists(storage.join(out, MANIFEST_FILE)):
        return out
    if not config.judge.checkpoint:
        raise UserError("judge.checkpoint: empty; the similarity groups are measured by the "
                        "judge (E_id trained on these very images)")
    source = make_real_subset(config, measured.source)
    measuring = config.model_copy(deep=True)
    measuring.sweep.measure.data = source
    measuring.sweep.measure.encoder = config.judge.checkpoint
    measuring.sweep.measure.encoder_backbone = config.judge.backbone
    measure_pool(measuring, out)
    return out


def make_synthetic_set(config: FactoryConfig, synthetic: SyntheticSet,
                       cli_address: str | None) -> str:
    """Synthesise the set from the face world's held-out inquiries with the synthesis section's
    sampler, filter and privacy check."""
    out = data_uri(config, synthetic)
    if storage.exists(storage.join(out, MANIFEST_FILE)):
        return out
    run = config.model_copy(deep=True)
    cfg = run.synthesis
    cfg.out = out
    if synthetic.generator:
        cfg.checkpoint = synthetic.generator
    cfg.inquiry.identities = synthetic.identities
    cfg.inquiry.mixup_identities = synthetic.mixup
    cfg.images_per_identity = synthetic.images
    cfg.m.kind = "values"
    cfg.m.values = list(synthetic.m_values)
    cfg.identities_per_shard = IDENTITIES_PER_SHARD
    cfg.seed = synthetic.seed
    cfg.privacy.real_data = (cfg.privacy.real_data
                             or storage.join(layout.faceworld_uri(config), "train"))
    synthesize(run, cli_address=cli_address)
    return out


def judged_similarity(config: FactoryConfig, uri: str) -> dict[str, dict[str, float]]:
    """Per requested m of a synthetic set: the judge's mean, std and count of its plain
    samples' cosine to their inquiry image (what the m study's cells are placed by)."""
    judge = load_judge(config.judge)
    if judge is None:
        raise UserError("judge.checkpoint: empty; the experiments measure every synthetic set "
                        "with the judge (assets/faceworld-judge for the face world)")
    manifest = read_manifest(uri)
    _, metadata, plain, to_inquiry = judged_inquiries(judge, uri, manifest,
                                                      layout.synthesis_inquiry_uri(config))
    requested = np.array([float(meta["m"]) for meta in metadata])[plain]
    return {f"{m:+.2f}": {"mean": round(float(to_inquiry[requested == m].mean()), 4),
                          "std": round(float(to_inquiry[requested == m].std()), 4),
                          "n": int((requested == m).sum())}
            for m in np.unique(requested)}


def synthetic_identities(uri: str) -> int:
    """How many identities a finished synthetic set holds (the inquiry filter may give fewer
    than asked)."""
    return int(read_manifest(uri)["counts"]["identities"])
