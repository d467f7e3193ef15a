"""The searched parameters: from ``sweep.space`` to a Ray Tune ``param_space``, and from one
trial's sampled values back to a validated :class:`FactoryConfig`.

Swept parameters are dotted config keys (``recognizer.select.m``,
``recognizer.domain_mixup.psi``, ``synthesis.m.values`` ...), so anything the config can set can
be swept, and a trial's config is validated exactly as a file would be.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from factory.config import FactoryConfig, SearchSpec, describe_validation_error, set_dotted
from factory.errors import ConfigError
from factory.formats.shard_metadata import read_dataset_metadata

SIMILARITY_KEY = "recognizer.select.similarity"
SEED_KEY = "recognizer.seed"


def apply_params(base: Mapping[str, Any], params: Mapping[str, Any]) -> FactoryConfig:
    """``base`` (a config dump) with every dotted ``params`` key set, validated."""
    from pydantic import ValidationError

    raw = copy.deepcopy(dict(base))
    for key, value in params.items():
        set_dotted(raw, key, value, source=f"sweep.space.{key}")
    try:
        return FactoryConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"sweep.space: {describe_validation_error(exc)}") from None


def similarity_groups(pool_uri: str, groups: int) -> list[list[float]]:
    """``groups`` ranges of the pool's similarity to center holding equal sample counts.

    Bounds are the pool's quantiles to 4 decimals (the outer ones rounded outwards, so every
    sample falls in a group); the selection is inclusive, so a sample exactly on an inner bound
    belongs to both neighbouring groups. The similarities are read from the shards' Parquet
    metadata (:mod:`factory.formats.shard_metadata`), one column, not from the tars.
    """
    values = read_dataset_metadata(pool_uri, ["similarity_center"])["similarity_center"].to_numpy()
    edges = np.round(np.quantile(values, np.linspace(0.0, 1.0, groups + 1)), 4)
    edges[0] = np.floor(values.min() * 1e4) / 1e4
    edges[-1] = np.ceil(values.max() * 1e4) / 1e4
    return [[float(edges[i]), float(edges[i + 1])] for i in range(groups)]


def seed_values(base_seed: int, seeds: int) -> list[int]:
    """The recognizer seeds every setting is repeated with (``sweep.seeds``)."""
    return [base_seed + offset for offset in range(seeds)]


def tune_space(space: Mapping[str, SearchSpec],
               groups: list[list[float]] | None = None,
               seeds: list[int] | None = None) -> dict[str, Any]:
    """The Ray Tune ``param_space`` (flat, keyed by the dotted config keys); with more than one
    seed, a grid over ``recognizer.seed`` repeats every setting."""
    from ray import tune

    param_space: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.grid is not None:
            param_space[key] = tune.grid_search(list(spec.grid))
        elif spec.choice is not None:
            param_space[key] = tune.choice(list(spec.choice))
        elif spec.uniform is not None:
            param_space[key] = tune.uniform(*spec.uniform)
        else:
            param_space[key] = tune.loguniform(*spec.loguniform)
    if groups:
        param_space[SIMILARITY_KEY] = tune.grid_search(groups)
    if seeds and len(seeds) > 1:
        param_space[SEED_KEY] = tune.grid_search(list(seeds))
    return param_space


def corner_params(space: Mapping[str, SearchSpec]) -> list[dict[str, Any]]:
    """Every combination of the grid values, choices and range bounds: applying each of them
    to the base config catches a bad key or value before any trial starts."""
    options: dict[str, list[Any]] = {}
    for key, spec in space.items():
        options[key] = list(spec.grid or spec.choice or spec.uniform or spec.loguniform or [])
    keys = list(options)
    return [dict(zip(keys, values)) for values in itertools.product(*options.values())]


def grid_size(space: Mapping[str, SearchSpec], groups: list[list[float]] | None = None) -> int:
    """Trials per sample: the product of the grid lengths (1 without grids)."""
    size = len(groups) if groups else 1
    for spec in space.values():
        if spec.grid is not None:
            size *= len(spec.grid)
    return size
