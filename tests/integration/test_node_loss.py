"""A worker node lost mid-run, as a spot instance is: the job finishes without a rerun.

Each test starts a two-node Ray cluster on loopback (``ray.cluster_utils.Cluster``): a head
with 1 CPU that holds the driver and the data, and a 2-CPU worker node. The work asks for 2
CPUs per actor or Ray Train worker, so it can only run on the worker node. Once the first
shard or the second checkpoint is written, the worker node is killed (its raylet and every process on it,
no graceful drain) and a fresh 2-CPU node joins, as the autoscaler replaces a preempted
instance. Synthesis must then hold exactly the planned keys, none twice, no temporaries;
training must resume from its last checkpoint, not from epoch 0.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from factory.config import FactoryConfig, load_config
from factory.formats.shards import iter_shard
from factory.storage import TEMP_MARKER
from factory.synth.plan import planned_keys
from factory.synth.synthesize import make_plan
from factory.checkpoints.recognizer import load_state
from factory.checkpoints.generator import load_generator

NODE_CPUS = 2


@pytest.fixture
def cluster() -> Iterator:
    """The head (1 CPU) and one 2-CPU worker node; this process owns the nodes (Ray starts
    and stops them from the main thread only) and the jobs' drivers connect to it."""
    from ray.cluster_utils import Cluster

    with socket.socket() as probe:  # other Ray instances on this machine may hold 8265
        probe.bind(("127.0.0.1", 0))
        dashboard_port = probe.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": dashboard_port})
    cluster.add_node(num_cpus=NODE_CPUS)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def run_losing_a_node(cluster, command: str, config: FactoryConfig, tmp_path: Path,
                      progress: Callable[[], int], at_least: int, timeout: float = 600.0) -> int:
    """Run ``factory <command>`` as a driver on the cluster; once ``progress()`` reaches
    ``at_least``, kill the worker node (raylet and every process on it, no drain) and add a
    fresh one, as the autoscaler replaces a reclaimed spot instance. Returns the progress at
    the kill; fails if the driver ended before it or did not finish cleanly after it."""
    config_file = tmp_path / f"{command}.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    log = tmp_path / f"{command}.log"
    with open(log, "w") as stream:
        driver = subprocess.Popen(
            [sys.executable, "-m", "factory.cli", command, "--config", str(config_file),
             "--address", cluster.address], cwd=tmp_path, stdout=stream,
            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + timeout
        while progress() < at_least:
            assert driver.poll() is None, f"the run ended before the kill:\n{log.read_text()}"
            assert time.time() < deadline, "nothing was written before the deadline"
            time.sleep(0.05)
        worker, = cluster.worker_nodes
        cluster.remove_node(worker, allow_graceful=False)
        at_kill = progress()
        cluster.add_node(num_cpus=NODE_CPUS)
        driver.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, log.read_text()[-3000:]
    return at_kill


def committed_checkpoints(run_root: Path) -> int:
    """How many checkpoints Ray Train lists in the run's snapshot (each one restorable)."""
    snapshot = run_root / "checkpoint_manager_snapshot.json"
    try:
        return len(json.loads(snapshot.read_text())["checkpoint_results"])
    except (OSError, ValueError, KeyError):  # not written yet, or being replaced
        return 0


def _done(stats: Path) -> int:
    """Shards complete (their stats file, written last, exists)."""
    return sum(1 for _ in stats.glob("shard-*.json")) if stats.exists() else 0


def test_synthesis_survives_losing_the_actors_node(cluster, world, tiny_generator, tmp_path):
    out = tmp_path / "synthetic"
    shards = 8
    config = load_config(None, [
        f"workdir={world}", f"synthesis.checkpoint={tiny_generator}", f"synthesis.out={out}",
        "synthesis.inquiry.identities=4", "synthesis.inquiry.max_similarity=1.0",
        f"synthesis.inquiry.mixup_identities={shards - 4}", "synthesis.images_per_identity=2",
        "synthesis.identities_per_shard=1", "synthesis.sampling.steps=4",
        "synthesis.sampling.batch_size=4", "synthesis.actors.num_actors=1",
        f"synthesis.actors.cpus_per_actor={NODE_CPUS}", "synthesis.actors.threads_per_actor=1",
        f"runtime.mlflow_tracking_uri=sqlite:///{tmp_path}/mlflow.db"])
    at_kill = run_losing_a_node(cluster, "synthesize", config, tmp_path,
                                lambda: _done(out / "stats"), 1)
    assert 1 <= at_kill < shards and _done(out / "stats") == shards
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["shards"] == shards
    identities, _ = make_plan(config, load_generator(str(tiny_generator)))
    keys = [s["__key__"] for shard in sorted((out / "shards").glob("*.tar"))
            for s in iter_shard(str(shard))]
    assert sorted(keys) == sorted(planned_keys(config.synthesis, identities))
    assert len(keys) == len(set(keys)) == shards * 2
    left = [p.name for p in out.rglob("*") if p.name.startswith(TEMP_MARKER)]
    assert not left, left


def test_training_resumes_from_its_last_checkpoint_after_losing_the_workers_node(
        cluster, world, tmp_path):
    storage = tmp_path / "runs"
    epochs = 6
    config = load_config(None, [
        f"workdir={world}",
        f"evaluate.benchmarks=[{world / 'faceworld' / 'benchmarks' / 'tiny.bin'}]",
        f"recognizer.storage={storage}",
        f"runtime.mlflow_tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "recognizer.backbone.name=ir-tiny", "recognizer.backbone.input_size=32",
        "recognizer.backbone.embedding_size=16", "recognizer.optimizer.batch_size=8",
        f"recognizer.optimizer.epochs={epochs}", "recognizer.optimizer.warmup_epochs=0",
        f"recognizer.workers.cpus_per_worker={NODE_CPUS}", "recognizer.max_failures=2"])
    run_root = storage / config.recognizer.run_name
    # a checkpoint Ray Train has committed (listed in its snapshot): a folder alone can exist,
    # under load, before it is registered, and a restart then begins from scratch
    run_losing_a_node(cluster, "train-recognizer", config, tmp_path,
                      lambda: committed_checkpoints(run_root), 1)
    metrics = json.loads((run_root / "final" / "metrics.json").read_text())
    # the restarted worker group began after a checkpoint, not from scratch, and finished
    assert 1 <= metrics["start_epoch"] < epochs
    assert metrics["epoch"] == epochs - 1
    assert load_state(str(run_root / "final"))["epoch"] == epochs - 1
