"""Fixtures shared by the tests that run Ray Train on a tiny face world."""

from __future__ import annotations

import pytest

from factory.config import BenchmarkSpec, FactoryConfig
from factory.faceworld.build import build_faceworld


@pytest.fixture(scope="module")
def ray_two_cpus():
    """A local Ray cluster the size of the CI machine (2 CPUs), for one test module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 32 px face world of 8 identities x 4 images with one small benchmark, "tiny"."""
    root = tmp_path_factory.mktemp("world")
    config = FactoryConfig(workdir=str(root))
    config.faceworld.image_size = 32
    config.faceworld.identities = 8
    config.faceworld.images_per_identity = 4
    config.faceworld.inquiry_identities = 4
    config.faceworld.benchmarks = [BenchmarkSpec(name="tiny", identities=20, pairs=40)]
    build_faceworld(config)
    return root
