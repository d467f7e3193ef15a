"""Sweep set-up without a sweep: a measured real pool split into similarity groups, and search
specs as Tune domains checked at their corners (whole sweeps: tests/integration/test_sweep.py)."""

from __future__ import annotations

import numpy as np

from factory import layout
from factory.config import load_config
from factory.formats.dataset import open_dataset


def test_a_measured_real_pool_splits_into_equal_similarity_groups(world, tmp_path):
    """The similarity-group study's pool: real images with their measured similarity."""
    import torch

    from factory.models.iresnet import build_backbone
    from factory.sweep.space import similarity_groups, tune_space
    from factory.synth.measure import measure_pool

    torch.manual_seed(0)
    torch.save(build_backbone("ir-tiny", 32, 32).state_dict(), tmp_path / "model.pt")
    config = load_config(None, [
        f"workdir={tmp_path}", f"sweep.measure.data={world / 'faceworld' / 'train'}",
        f"sweep.measure.encoder={tmp_path / 'model.pt'}",
        "sweep.measure.encoder_backbone={name: ir-tiny, input_size: 32, embedding_size: 32}",
        "sweep.measure.samples_per_shard=10", "sweep.similarity_groups=4"])
    pool = layout.sweep_pool_uri(config)
    manifest = measure_pool(config, pool)
    assert manifest["counts"] == {"samples": 32, "identities": 8, "shards": 4}

    dataset = open_dataset(pool)
    real = open_dataset(str(world / "faceworld" / "train"))
    assert len(dataset) == 32 and dataset.labels.tolist() == real.labels.tolist()
    similarity = np.array([meta["similarity_center"] for meta in dataset.metadata])
    assert (similarity <= 1.0 + 1e-6).all() and (similarity > -1.0).all()
    assert [meta["source_index"] for meta in dataset.metadata] == list(range(32))

    groups = similarity_groups(pool, 4)
    sizes = [len(open_dataset(pool, similarity_range=tuple(bounds))) for bounds in groups]
    assert sizes == [8, 8, 8, 8]  # equal counts (no two samples share a similarity here)
    assert groups[0][0] <= similarity.min() and groups[-1][1] >= similarity.max()
    assert tune_space({}, groups)["recognizer.select.similarity"] == {"grid_search": groups}


def test_search_specs_become_tune_domains_and_are_checked_at_their_corners():
    from ray.tune.search.sample import Categorical, Float

    from factory.sweep.space import apply_params, corner_params, grid_size, tune_space

    config = load_config(None, [
        "sweep.space={recognizer.select.m: {grid: [[0.9, 1.0], [-0.1, 0.1]]}, "
        "recognizer.domain_mixup.psi: {choice: [0.5, grid]}, "
        "recognizer.optimizer.lr: {loguniform: [0.001, 0.1]}, "
        "recognizer.select.mixup_share: {uniform: [0.0, 0.5]}}", "sweep.num_samples=3"])
    space = tune_space(config.sweep.space)
    assert space["recognizer.select.m"] == {"grid_search": [[0.9, 1.0], [-0.1, 0.1]]}
    assert isinstance(space["recognizer.domain_mixup.psi"], Categorical)
    assert isinstance(space["recognizer.optimizer.lr"], Float)
    assert space["recognizer.optimizer.lr"].lower == 0.001
    assert grid_size(config.sweep.space) == 2  # x num_samples = 6 trials
    corners = corner_params(config.sweep.space)
    assert len(corners) == 2 * 2 * 2 * 2
    trial = apply_params(config.model_dump(mode="json"), corners[-1])
    assert trial.recognizer.select.m == (-0.1, 0.1) and trial.recognizer.domain_mixup.psi == "grid"
    assert trial.recognizer.optimizer.lr == 0.1 and trial.recognizer.select.mixup_share == 0.5
