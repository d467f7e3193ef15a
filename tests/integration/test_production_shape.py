"""The production config's code paths at their real shapes, on a CPU, on the local S3 endpoint.

``configs/production-0.5m.yaml`` as shipped (112 px, an r50 E_id given as arcface_torch's
``model.pt``, the DCFace-scale UNet, the r50 CosFace recognizer), with only its URIs pointed at
the test bucket (the generator's run folder excepted, see ``_production_overrides``) and its
volumes cut to one step: one generator training step, one recognizer training step, a two-image
synthesis from the generator that step made, and one evaluation batch. The data is a 112 px face
world written to the bucket first, standing in for CASIA-WebFace (the same RecordIO format).
What runs is the production path; only the counts are small. Sampling (the synthesis and the
preview grid every generator checkpoint carries) uses 2 DDIM steps instead of 20: a count, not a
shape, and at 20 the preview alone is 400 UNet passes.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from factory.cli import main
from helpers import REPO
from .test_object_store import BUCKET, _objects, aws, endpoint  # noqa: F401 (fixtures)

pytestmark = pytest.mark.heavy

PRODUCTION = str(REPO / "configs" / "production-0.5m.yaml")
DATA = f"s3://{BUCKET}/shape-data/faceworld"
RUN = f"s3://{BUCKET}/shape-run"
EID = f"s3://{BUCKET}/shape-weights/eid-r50/model.pt"


def _production_overrides(generator_storage: Path) -> list[str]:
    """Every USER-SUPPLIED URI pointed at the bucket, and counts of one (shapes untouched).

    The generator's run folder alone is on local disk: its checkpoint (UNet, EMA and AdamW
    state, over 2 GB) held in moto's memory inside the test process pushed this shared machine
    into Ray's out-of-memory killer; reading a generator from s3:// is what
    test_object_store checks, with a small one."""
    return [
        f"generator.storage={generator_storage}",
        f"workdir={RUN}", "runtime.num_cpus=2",
        f"runtime.mlflow_artifact_location=s3://{BUCKET}/shape-mlflow",
        f"recognizer.data={DATA}/inquiry",  # 4 identities x 1 image: one batch of 4
        f"generator.data={DATA}/train", f"generator.identity_encoder={EID}",
        f"generator.compliance.data={DATA}/inquiry",
        f"synthesis.inquiry.data={DATA}/inquiry", f"synthesis.privacy.real_data={DATA}/train",
        f"evaluate.benchmarks=[{DATA}/benchmarks/fw_frontal.bin]",
        f"synthesis.checkpoint={generator_storage}/cemiface-112/final",
        f"synthesis.out={RUN}/synthetic",
        # one recognizer step: 4 images, batch 4, 1 epoch, CPU workers
        "recognizer.optimizer.epochs=1", "recognizer.optimizer.batch_size=4",
        "recognizer.workers.num_workers=1", "recognizer.workers.use_gpu=false",
        "recognizer.workers.cpus_per_worker=1", "recognizer.workers.loader_workers=0",
        "recognizer.max_failures=0",
        # one generator step, batch 2
        "generator.optimizer.steps=1", "generator.optimizer.batch_size=2",
        "generator.optimizer.warmup_steps=0", "generator.checkpoint_every=1",
        "generator.log_every=1", "generator.workers.num_workers=1",
        "generator.workers.use_gpu=false", "generator.workers.cpus_per_worker=1",
        "generator.workers.loader_workers=0", "generator.max_failures=0",
        # the checkpoint's preview grid (4 identities x 5 m): 2 DDIM steps, not 20, 2 at a time
        "generator.sampling.steps=2", "generator.sampling.batch_size=2",
        # two images: one identity x 2
        "synthesis.inquiry.identities=1", "synthesis.images_per_identity=2",
        "synthesis.identities_per_shard=1", "synthesis.sampling.steps=2",
        "synthesis.sampling.batch_size=2", "synthesis.actors.num_actors=1",
        "synthesis.actors.cpus_per_actor=0.5", "synthesis.actors.gpus_per_actor=0",
        # one evaluation batch: 20 pairs = 40 images; no GtR (there is no real reference run)
        "evaluate.batch_size=64", "evaluate.reference_run=",
    ]


def test_the_production_config_runs_at_its_real_shapes(endpoint, aws, tmp_path, capsys):
    import boto3
    import ray
    import torch

    from factory.formats.images import decode_image
    from factory.formats.shards import iter_shard
    from factory.models.iresnet import build_backbone
    from factory.checkpoints.generator import load_generator

    aws.setenv("AWS_ENDPOINT_URL", endpoint)
    aws.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    seconds: dict[str, float] = {}

    def stage(name: str, *argv: str) -> None:
        start = time.monotonic()
        assert main(list(argv)) == 0, capsys.readouterr().err[-2000:]
        seconds[name] = time.monotonic() - start

    stage("face world 112 px", "faceworld", "--config", str(REPO / "configs" / "smoke.yaml"),
          "faceworld.image_size=112", f"faceworld.out={DATA}")
    # E_id as the user brings it: an arcface_torch model.pt (174 MB) put in the bucket with
    # the AWS tools (boto3 here, `aws s3 cp` for a user)
    buffer = io.BytesIO()
    torch.manual_seed(0)
    torch.save(build_backbone("r50", 112, 512).state_dict(), buffer)
    buffer.seek(0)
    boto3.client("s3", endpoint_url=endpoint).upload_fileobj(
        buffer, BUCKET, EID.removeprefix(f"s3://{BUCKET}/"))

    generator_storage = tmp_path / "generator"
    overrides = _production_overrides(generator_storage)
    try:
        stage("generator step", "train-generator", "--config", PRODUCTION, *overrides)
        stage("recognizer step", "train-recognizer", "--config", PRODUCTION, *overrides)
        stage("synthesis, 2 images", "synthesize", "--config", PRODUCTION, *overrides)
    finally:
        ray.shutdown()
    stage("evaluation batch", "evaluate", "--config", PRODUCTION, *overrides,
          f"evaluate.checkpoint={RUN}/recognizer/r50-cosface/final")
    out = capsys.readouterr().out
    with capsys.disabled():
        print("\nproduction shape, wall seconds: " +
              " | ".join(f"{name} {value:.0f}" for name, value in seconds.items()))

    generator = load_generator(str(generator_storage / "cemiface-112" / "final"))
    assert generator.image_size == 112 and generator.meta["step"] == 1
    assert list(generator.model.unet.config.block_out_channels) == [128, 128, 256, 384, 512]
    assert sum(p.numel() for p in generator.model.unet.parameters()) > 100_000_000
    assert sum(p.numel() for p in generator.encoder.parameters()) > 40_000_000  # r50
    shards = [k for k in _objects(endpoint, "shape-run/synthetic/shards/") if k.endswith(".tar")]
    samples = list(iter_shard(f"s3://{BUCKET}/{shards[0]}"))
    assert len(shards) == 1 and len(samples) == 2
    image = decode_image(samples[0]["jpg"])
    assert image.shape[:2] == (112, 112)
    assert f"evaluation of {RUN}/recognizer/r50-cosface/final" in out and "fw_frontal" in out
