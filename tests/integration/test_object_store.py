"""The factory on an object store: a local S3-compatible endpoint (moto's server on a free
127.0.0.1 port) reached the way AWS tools reach one.

Credentials and region come from ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
``AWS_DEFAULT_REGION``; the endpoint from the config key ``runtime.s3_endpoint`` in the end-to-end
run and from ``AWS_ENDPOINT_URL`` in the error checks, so both ways are exercised. Every stage
reads and writes only ``s3://`` (the face world, checkpoints, shards, MLflow's artifacts); the
MLflow tracking database alone is a local SQLite file.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import save_tiny_generator
from factory import storage
from factory.cli import main
from factory.config import load_config
from helpers import REPO

BUCKET = "factory-test"
RUN = f"s3://{BUCKET}/run"
ERROR_SECONDS = 30
"""A storage error must come back within this, retries included (the endpoint-down case takes
a few seconds of the client's own retries)."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint():
    """moto's S3 server on loopback with one empty bucket, for this module."""
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture
def aws(monkeypatch, tmp_path):
    """The AWS environment of a user with credentials and no endpoint variable; the variables
    the factory exports (the endpoint) are put back as they were after the test."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _objects(endpoint: str, prefix: str = "") -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _unfinished_uploads(endpoint: str) -> list[str]:
    import boto3

    uploads = boto3.client("s3", endpoint_url=endpoint).list_multipart_uploads(Bucket=BUCKET)
    return [upload["Key"] for upload in uploads.get("Uploads", [])]


def _run_config(endpoint: str, tmp_path: Path) -> Path:
    """The smoke config on the bucket, endpoint given by the config key, MLflow's artifacts
    in the bucket, a 16-shard synthesis (long enough to be killed mid-run)."""
    config = load_config(str(REPO / "configs" / "smoke.yaml"), [
        f"workdir={RUN}", f"runtime.s3_endpoint={endpoint}", "runtime.num_cpus=2",
        f"runtime.mlflow_tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"runtime.mlflow_artifact_location=s3://{BUCKET}/mlflow",
        f"synthesis.checkpoint={RUN}/generator", "synthesis.identities_per_shard=1",
        "synthesis.inquiry.mixup_identities=12", "synthesis.images_per_identity=3",
        "synthesis.sampling.steps=10", "synthesis.actors.threads_per_actor=1",
        "recognizer.backbone.name=ir-tiny", "recognizer.backbone.input_size=32",
        "recognizer.backbone.embedding_size=16", "recognizer.optimizer.batch_size=8",
        "recognizer.optimizer.epochs=1", "recognizer.workers.cpus_per_worker=0.5",
        "recognizer.max_failures=0"])
    path = tmp_path / "s3-run.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def test_every_stage_runs_on_the_object_store(endpoint, aws, tmp_path, capsys):
    import mlflow
    import ray

    from factory.formats.shards import iter_shard
    from factory.synth.plan import planned_keys
    from factory.synth.synthesize import make_plan
    from factory.checkpoints.recognizer import load_state
    from factory.checkpoints.generator import load_generator

    config_file = _run_config(endpoint, tmp_path)
    config = load_config(str(config_file))
    assert main(["faceworld", "--config", str(config_file)]) == 0
    assert {"faceworld/train/train.rec", "faceworld/inquiry/train.rec",
            "faceworld/benchmarks/fw_pose.bin"} <= {
        key.removeprefix("run/") for key in _objects(endpoint, "run/faceworld/")}
    # a generator checkpoint (untrained, over the bucket's face world) put in the bucket
    local_generator = save_tiny_generator(str(tmp_path / "generator"), f"{RUN}/faceworld/train")
    storage.copy_tree(local_generator, f"{RUN}/generator")

    # synthesis killed mid-run (the driver and the local Ray it started), then run again
    out = f"{RUN}/synthetic"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("AWS_ENDPOINT_URL")  # the config key alone names the endpoint
    command = [sys.executable, "-m", "factory.cli", "synthesize", "--config", str(config_file)]
    driver = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not [p for p in _objects(endpoint, "run/synthetic/stats/") if p.endswith(".json")]:
        assert driver.poll() is None and time.time() < deadline, "no shard finished"
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    finished = [p for p in _objects(endpoint, "run/synthetic/stats/") if p.endswith(".json")]
    assert 0 < len(finished) < 16, "the kill must land mid-run"

    try:
        assert main(["synthesize", "--config", str(config_file)]) == 0
        assert f"{out}: 48 samples" in capsys.readouterr().out
        identities, _ = make_plan(config, load_generator(f"{RUN}/generator"))
        shard_keys = [key for key in _objects(endpoint, "run/synthetic/shards/")
                      if key.endswith(".tar")]  # not pyarrow's directory markers, nor Parquet
        assert len(shard_keys) == 16 and all(
            key.rsplit("/", 1)[1].startswith("shard-") for key in shard_keys)
        keys = [sample["__key__"] for key in sorted(shard_keys)
                for sample in iter_shard(f"s3://{BUCKET}/{key}")]
        assert sorted(keys) == sorted(planned_keys(config.synthesis, identities))
        assert len(keys) == len(set(keys)) == 16 * 3
        assert storage.exists(f"{out}/manifest.json")
        everything = _objects(endpoint)
        assert not [key for key in everything if storage.TEMP_MARKER in key]
        assert _unfinished_uploads(endpoint) == []

        # a recognizer trained from the shards and, as extra data, the face world's RecordIO
        assert main(["train-recognizer", "--config", str(config_file), f"recognizer.data={out}",
                     f"recognizer.extra_data=[{RUN}/faceworld/train]",
                     "recognizer.run_name=synthetic", "recognizer.optimizer.batch_size=4"]) == 0
    finally:
        ray.shutdown()
    final = "run/recognizer/synthetic/final/"
    assert {f"{final}backbone.pt", f"{final}metrics.json"} <= set(_objects(endpoint, final))
    # its classifier covers both: the shards' 4 inquiry identities (their 12 mixed identities
    # train on soft labels over those) and the face world's 8
    assert load_state(f"{RUN}/recognizer/synthetic/final")["head"]["weight"].shape[0] == 4 + 8

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name(config.runtime.experiment)
    assert experiment.artifact_location == f"s3://{BUCKET}/mlflow"
    artifacts = [key.rsplit("/", 1)[1] for key in _objects(endpoint, "mlflow/")]
    assert "manifest.json" in artifacts  # synthesis, from the driver
    assert artifacts.count("roc.png") == 1  # the training run, from its rank-0 worker


@pytest.mark.parametrize("case", ["no such bucket", "no credentials", "endpoint down"])
def test_object_store_errors_are_one_line_exit_2(endpoint, aws, tmp_path, capsys, case):
    workdir, endpoint_url = RUN + "-errors", endpoint
    if case == "no such bucket":
        workdir = "s3://no-such-bucket/run"
    elif case == "no credentials":
        aws.delenv("AWS_ACCESS_KEY_ID")
        aws.delenv("AWS_SECRET_ACCESS_KEY")
    else:
        endpoint_url = f"http://127.0.0.1:{_free_port()}"
    aws.setenv("AWS_ENDPOINT_URL", endpoint_url)
    start = time.monotonic()
    code = main(["faceworld", "--config", str(REPO / "configs" / "smoke.yaml"),
                 f"workdir={workdir}"])
    elapsed = time.monotonic() - start
    error = capsys.readouterr().err.strip()
    assert code == 2 and elapsed < ERROR_SECONDS
    assert len(error.splitlines()) == 1 and error.startswith("factory faceworld: error: s3://")
    assert {"no such bucket": "not found", "no credentials": "ACCESS_DENIED",
            "endpoint down": "NETWORK_CONNECTION"}[case] in error
