"""The two kinds of test, and the fixtures both kinds share (a tiny face world, a tiny
generator checkpoint).

A test is of the kind its folder says, and of no other: ``tests/unit/`` (mirrors ``factory/``)
starts no Ray and no server, and ``tests/integration/`` starts Ray (``ray.init``, Ray Train, Data
or Tune, or a ``factory`` command that does), an MLflow server, a Ray job server or moto's S3
server (one exception, for the unit suite's time alone: the bench scripts run end to end,
``tests/integration/test_bench_scripts.py``). :func:`pytest_collection_modifyitems` gives each
test the marker of its folder, ``unit`` or ``integration``, so ``-m unit`` and the folder select
the same tests; a hand-written kind marker is refused, so none can disagree with the folder.
``tests/unit/conftest.py`` checks that the unit tests start no Ray.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from factory.config import BenchmarkSpec, FactoryConfig
from factory.faceworld.build import build_faceworld

TESTS = Path(__file__).resolve().parent
KINDS = ("unit", "integration")


def folder_kind(path: Path) -> str | None:
    """``unit`` or ``integration`` for a test module under that folder, else None."""
    try:
        parts = Path(path).resolve().relative_to(TESTS).parts
    except ValueError:  # not under tests/
        return None
    return parts[0] if len(parts) > 1 and parts[0] in KINDS else None


@pytest.hookimpl(tryfirst=True)  # before -m selects on the markers
def pytest_collection_modifyitems(config, items):
    """Mark every test with its folder's kind; refuse a kind marker written by hand."""
    by_hand = [item.nodeid for item in items
               if any(item.get_closest_marker(kind) for kind in KINDS)]
    if by_hand:
        raise pytest.UsageError(
            "a test's kind is its folder (tests/unit or tests/integration), not a marker: "
            f"remove the unit/integration marker of {', '.join(by_hand)}")
    for item in items:
        kind = folder_kind(item.path)
        if kind is not None:
            item.add_marker(kind)


@pytest.fixture(autouse=True)
def isolated_mlflow_uri():
    """``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI, which the factory reads
    before a config's own URI: without this, one test's store would leak into the next."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(autouse=True)
def sweep_key(monkeypatch):
    """Sweeps seal their Tune state with the user's key (factory.sweep.seal); tests use a fixed
    one rather than create ~/.config/facefactory/sweep.key."""
    monkeypatch.setenv("FACTORY_SWEEP_KEY", "test-sweep-key")


@pytest.fixture(scope="module")
def ray_two_cpus():
    """A local Ray cluster the size of the CI machine (2 CPUs), for one test module: for
    integration tests only (here rather than in tests/integration/conftest.py while modules that
    use it still sit in tests/ itself)."""
    import ray

    from factory.runtime import start_local_ray

    # the factory's own local start: never a cluster a `ray start` on this machine (live or
    # dead) named in Ray's temp folder, and its workers told which cluster is theirs
    start_local_ray(2, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 32 px face world of 8 identities x 4 images with one small test benchmark, "tiny", and
    one small validation benchmark, "val_tiny"."""
    root = tmp_path_factory.mktemp("world")
    config = FactoryConfig(workdir=str(root))
    config.faceworld.image_size = 32
    config.faceworld.identities = 8
    config.faceworld.images_per_identity = 4
    config.faceworld.inquiry_identities = 4
    config.faceworld.benchmarks = [BenchmarkSpec(name="tiny", identities=20, pairs=40)]
    config.faceworld.validation_benchmarks = [BenchmarkSpec(name="val_tiny", identities=20,
                                                            pairs=40)]
    build_faceworld(config)
    return root


def save_tiny_generator(directory: str, data_uri: str) -> str:
    """An untrained 32 px generator checkpoint conditioned on a random ir-tiny E_id, recording
    ``data_uri`` as its training data: what synthesis and analysis need of a generator."""
    import torch

    from factory.config import GeneratorConfig, UNetConfig
    from factory.models.diffusion import training_scheduler
    from factory.models.iresnet import build_backbone
    from factory.checkpoints.encoder import encoder_record
    from factory.train.generator import build_generator
    from factory.checkpoints.generator import objective_record, save_generator

    torch.manual_seed(0)
    cfg = GeneratorConfig(image_size=32, unet=UNetConfig(
        block_out_channels=[16, 32], cross_attention=[False, True], norm_num_groups=8,
        cross_attention_dim=32, attention_head_dim=8))
    backbone = build_backbone("ir-tiny", 32, 64).eval()
    save_generator(directory, build_generator(cfg, 64).eval(), training_scheduler(cfg.diffusion),
                   encoder_record("test", backbone, 32),
                   {"step": 0, "image_size": 32, "code_version": "test", "data": data_uri,
                    "objective": objective_record(cfg)},
                   {"generator": cfg.model_dump(mode="json")})
    return directory


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory, world):
    """:func:`save_tiny_generator` over the tiny face world's training set."""
    directory = tmp_path_factory.mktemp("generator")
    save_tiny_generator(str(directory), str(world / "faceworld" / "train"))
    return directory
