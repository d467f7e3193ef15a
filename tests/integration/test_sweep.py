"""``factory sweep`` and ``factory compare`` on a tiny face world: trials select from a pool by
shard metadata, report to Tune every epoch, nest in MLflow, and a restored sweep keeps its
finished trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import numpy as np
import pytest

from factory.config import load_config
from factory.formats.dataset import open_dataset
from factory.formats.images import encode_jpeg
from factory.formats.shards import ShardSample, shard_name, write_shard
from factory.sweep.compare import sweep_rows
from factory.sweep.run import run_sweep

M_VALUES = [1.0, 0.5, 0.0, -0.5]


@pytest.fixture(scope="module")
def pool(world, tmp_path_factory):
    """The tiny world's training images as a synthesised-looking pool: sample i carries
    m = M_VALUES[i % 4], so each m range selects every identity."""
    root = tmp_path_factory.mktemp("pool")
    train = open_dataset(str(world / "faceworld" / "train"))
    rng = np.random.default_rng(0)
    samples = [ShardSample(f"{index:06d}", encode_jpeg(train.image(index)), int(train.labels[index]),
                           {"m": M_VALUES[index % 4], "similarity_center": float(rng.uniform()),
                            "mixup": None})
               for index in range(len(train))]
    write_shard(str(root / "shards" / shard_name(0)), samples)
    (root / "manifest.json").write_text(json.dumps({
        "counts": {"samples": len(samples)},
        "shards": [{"shard": shard_name(0), "count": len(samples)}]}))  # what readers read
    return root


def sweep_overrides(world, pool, out, name, *extra):
    return [
        f"workdir={out}", f"faceworld.out={world / 'faceworld'}",
        "faceworld.benchmarks=[{name: tiny, identities: 20, pairs: 40}]",
        "faceworld.validation_benchmarks=[{name: val_tiny, identities: 20, pairs: 40}]",
        f"runtime.mlflow_tracking_uri=sqlite:///{out}/mlflow.db", "runtime.experiment=sweeps",
        "recognizer.backbone.name=ir-tiny", "recognizer.backbone.input_size=32",
        "recognizer.backbone.embedding_size=32", "recognizer.optimizer.epochs=1",
        "recognizer.optimizer.batch_size=8", "recognizer.workers.cpus_per_worker=1",
        f"sweep.name={name}", f"sweep.pool={pool}", "sweep.asha.enabled=false",
        "sweep.space={recognizer.select.m: {grid: [[0.9, 1.0], [-0.1, 0.1]]}}", *extra]


def test_an_interrupted_sweep_restores_without_rerunning_finished_trials(
        ray_two_cpus, world, pool, tmp_path):
    """Two seeds of one setting, two epochs each; Ctrl-C after the first trial, then the same
    sweep again: the finished trial is kept, the other runs, and MLflow holds one parent with one
    nested run per trial. Every epoch reports the validation benchmark (what ASHA and the
    ranking read), the test benchmark is logged at the final epoch only, and compare summarises
    the setting over both seeds."""
    overrides = sweep_overrides(world, pool, tmp_path, "interrupted",
                                "recognizer.optimizer.epochs=2", "sweep.seeds=2",
                                "recognizer.seed=3",
                                "sweep.space={recognizer.select.m: {grid: [[0.9, 1.0]]}}")
    trials_dir = tmp_path / "sweeps" / "interrupted" / "trials"
    command = [sys.executable, "-m", "factory.cli", "sweep", *overrides]
    log = open(tmp_path / "sweep.log", "w")
    process = subprocess.Popen(command, start_new_session=True, stdout=log,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 400
    finished: list = []
    while not finished and time.monotonic() < deadline and process.poll() is None:
        time.sleep(1)
        finished = list(trials_dir.glob("*/final/metrics.json")) if trials_dir.exists() else []
    assert len(finished) == 1, "the first trial did not finish in time"
    os.kill(process.pid, signal.SIGINT)  # Ctrl-C: Tune saves the experiment and stops
    assert process.wait(timeout=120) == 130, (tmp_path / "sweep.log").read_text()[-3000:]
    first_metrics = json.loads(finished[0].read_text())

    outcome = run_sweep(load_config(None, overrides))
    assert outcome.trials == 2
    # The finished trial trained no epoch again. (Ctrl-C can land after it published its final
    # checkpoint but before Tune recorded it as finished: Tune then restarts it, Ray Train resumes
    # it at its last epoch, and it publishes the same metrics again.)
    assert json.loads(finished[0].read_text()) == first_metrics
    assert len(list(trials_dir.glob("*/final/metrics.json"))) == 2

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(experiment_names=["sweeps"])
    parent = runs[runs["tags.facefactory.sweep_parent"] == "interrupted"]
    trials = runs[runs["tags.facefactory.sweep"] == "interrupted"]
    assert len(parent) == 1 and parent["status"].iloc[0] == "FINISHED"
    assert set(trials["tags.mlflow.parentRunId"]) == {parent["run_id"].iloc[0]}
    finished_trial = finished[0].parent.parent.name
    assert (trials["tags.facefactory.trial"] == finished_trial).sum() == 1
    done = {path.parent.parent.name for path in trials_dir.glob("*/final/metrics.json")}
    assert set(trials[trials["status"] == "FINISHED"]["tags.facefactory.trial"]) == done
    finished_runs = trials[trials["status"] == "FINISHED"]
    assert sorted(finished_runs["params.swept.recognizer.seed"]) == ["3", "4"]
    assert set(finished_runs["params.swept.recognizer.select.m"]) == {"[0.9, 1.0]"}
    assert list(finished_runs["params.curve.m"].astype(float)) == [0.95, 0.95]
    assert finished_runs["metrics.tiny/acc"].between(0, 100).all()
    for run_id in finished_runs["run_id"]:
        assert [m.step for m in client.get_metric_history(run_id, "val_tiny/acc")] == [0, 1]
        assert [m.step for m in client.get_metric_history(run_id, "val_avg_acc")] == [0, 1]
        assert [m.step for m in client.get_metric_history(run_id, "tiny/acc")] == [1]
        assert [m.step for m in client.get_metric_history(run_id, "avg_acc")] == [1]
    for trial in done:
        assert json.loads((trials_dir / trial / "final" / "metrics.json").read_text())["epoch"] == 1
    rows = sweep_rows("sweeps", "interrupted")
    assert all(row.finished for row in rows)
    assert [row.validation for row in rows] == sorted((row.validation for row in rows),
                                                      reverse=True)
    assert outcome.figure.endswith("accuracy_vs_m.png") and os.path.exists(outcome.figure)
    assert "+-" in outcome.table and "recognizer.select.m=[0.9, 1]  2" in outcome.table
    assert "GtR" in outcome.table


def without_job_execution() -> dict[str, str]:
    """This environment, for an ``mlflow server`` that starts no job consumers: they run
    MLflow's GenAI jobs, which the factory never submits, and their processes cost more CPU
    than the server does."""
    return dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` on loopback with its own SQLite store and artefact folder."""
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=without_job_execution(), start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "mlflow server down"
            time.sleep(1)
    yield uri
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:  # a loaded machine: its workers take their time
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def test_a_generating_sweep_logs_to_an_mlflow_server(ray_two_cpus, world, tiny_generator,
                                                     mlflow_server, tmp_path):
    """Generate mode: each trial synthesises its own data (here: its own m values) first."""
    overrides = sweep_overrides(world, "", tmp_path, "generated") + [
        f"runtime.mlflow_tracking_uri={mlflow_server}", "sweep.mode=generate",
        "sweep.space={synthesis.m.values: {grid: [[1.0], [0.0, -0.5]]}}",
        f"synthesis.checkpoint={tiny_generator}", "synthesis.inquiry.identities=4",
        "synthesis.inquiry.max_similarity=1.0", "synthesis.images_per_identity=4",
        "synthesis.sampling.steps=2", "synthesis.sampling.batch_size=8",
        "synthesis.actors.cpus_per_actor=0.5", "synthesis.actors.threads_per_actor=1"]
    outcome = run_sweep(load_config(None, overrides))
    assert outcome.trials == 2

    data = sorted((tmp_path / "sweeps" / "generated" / "data").iterdir())
    requested = [sorted({meta["m"] for meta in open_dataset(str(d)).metadata}) for d in data]
    assert sorted(requested) == [[-0.5, 0.0], [1.0]]
    mlflow.set_tracking_uri(mlflow_server)
    runs = mlflow.search_runs(experiment_names=["sweeps"],
                              filter_string="tags.`facefactory.sweep` = 'generated'")
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}
    assert sorted(runs["params.curve.m"].astype(float)) == [-0.25, 1.0]
    parent = mlflow.search_runs(experiment_names=["sweeps"],
                                filter_string="tags.`facefactory.sweep_parent` = 'generated'")
    artifacts = mlflow.MlflowClient().list_artifacts(parent["run_id"].iloc[0])
    assert [a.path for a in artifacts] == ["accuracy_vs_m.png"]
