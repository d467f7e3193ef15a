"""The synthesis plan: which identities, which m and seed per image, which shard."""

import numpy as np
import pytest

from factory.config import MValuesConfig, SynthesisConfig
from factory.synth.plan import (
    ShardItem,
    m_candidates,
    mixup_identities,
    plan_identities,
    planned_keys,
    planned_m,
    sample_m,
    sample_seed,
    select_inquiries,
    shard_items,
)


def unit(rows):
    rows = np.asarray(rows, float)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_inquiry_filter_keeps_every_pair_below_the_threshold():
    rng = np.random.default_rng(0)
    base = unit(rng.normal(size=(6, 16)))
    # rows 6..8 are near-copies of rows 0..2 and must be dropped
    embeddings = np.concatenate([base, unit(base[:3] + 0.05 * rng.normal(size=(3, 16)))])
    kept = select_inquiries(embeddings, 0.3, count=100)
    assert kept == [i for i in range(6) if i in kept] and not set(kept) & {6, 7, 8}
    cross = embeddings[kept] @ embeddings[kept].T
    assert np.all(cross[~np.eye(len(kept), dtype=bool)] < 0.3)
    assert select_inquiries(embeddings, 0.3, count=2) == kept[:2]


def test_identity_mixup_is_the_normalised_blend_with_a_grid_phi():
    embeddings = unit(np.eye(4))
    mixed = mixup_identities(embeddings, 5, [0.25, 0.5], seed=3)
    assert len(mixed) == 5
    for i, j, phi, vector in mixed:
        assert i != j and phi in (0.25, 0.5)
        expected = phi * embeddings[i] + (1 - phi) * embeddings[j]
        np.testing.assert_allclose(vector, expected / np.linalg.norm(expected))
    assert [m[:3] for m in mixup_identities(embeddings, 5, [0.25, 0.5], seed=3)] == \
        [m[:3] for m in mixed]


def test_m_values_range_and_distributions():
    assert m_candidates(MValuesConfig(kind="range", low=-0.1, high=0.1, interval=0.05)) == \
        [-0.1, -0.05, 0.0, 0.05, 0.1]
    cycled = MValuesConfig(kind="values", values=[1.0, 0.0])
    assert [sample_m(cycled, 0, 7, i) for i in range(4)] == [1.0, 0.0, 1.0, 0.0]
    uniform = MValuesConfig(kind="uniform", low=-0.2, high=0.3)
    draws = [sample_m(uniform, 0, label, i) for label in range(20) for i in range(10)]
    assert min(draws) >= -0.2 and max(draws) <= 0.3 and len(set(draws)) == 200
    assert draws[0] == sample_m(uniform, 0, 0, 0)
    normal = MValuesConfig(kind="normal", mean=0.9, std=1.0)
    assert all(-1 <= sample_m(normal, 1, 0, i) <= 1 for i in range(200))
    with pytest.raises(ValueError):
        MValuesConfig(kind="range", low=0.5, high=0.1)


def test_seeds_are_unique_across_identities_and_images():
    seeds = {sample_seed(0, label, i) for label in range(300) for i in range(60)}
    assert len(seeds) == 300 * 60
    assert sample_seed(1, 0, 0) not in seeds


def test_plan_labels_shards_and_keys():
    rng = np.random.default_rng(1)
    embeddings = unit(rng.normal(size=(10, 32)))
    cfg = SynthesisConfig(images_per_identity=3, identities_per_shard=4,
                          inquiry={"identities": 10, "max_similarity": 0.9,
                                   "mixup_identities": 3, "mixup_phi": [0.5]},
                          include_inquiry_images=True)
    identities = plan_identities(cfg, embeddings, [f"p{i}" for i in range(10)],
                                 list(range(100, 110)))
    assert [i.label for i in identities] == list(range(13))
    assert identities[0].image_index == 100 and identities[0].partner is None
    assert all(i.partner and i.phi == 0.5 and i.image_index is None for i in identities[10:])
    items = shard_items(identities, 4)
    assert [len(item.identities) for item in items] == [4, 4, 4, 1]
    row = items[1].to_row()
    assert row["embeddings"].shape == (4, 32) and row["embeddings"].dtype == np.float64
    assert "embedding" not in row["item"]  # the array travels as an array, not as JSON text
    again = ShardItem.from_row(**row)
    assert again == items[1]
    assert np.array_equal(again.embeddings(), items[1].embeddings())
    keys = planned_keys(cfg, identities)
    assert len(keys) == len(set(keys)) == 13 * 3 + 10
    assert all("." not in key for key in keys)
    # the requested m of every synthetic sample (the 10 real copies are not planned samples)
    cfg.m = MValuesConfig(values=[1.0, 0.0])
    assert planned_m(cfg, identities) == [1.0, 0.0, 1.0] * 13
