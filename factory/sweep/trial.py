"""One sweep trial, run by Ray Tune in its own process: build the trial's config, synthesise its
data in generate mode, train and evaluate a recognizer reporting every epoch to Tune, and leave
its results in a nested MLflow run.

A trial's recognizer run is named after the Tune trial and stored under the sweep, so a trial
that Tune restarts (a restored sweep, a failed node) resumes its own checkpoints rather than
starting over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from factory import storage
from factory.config import FactoryConfig
from factory.runtime import environment_variable
from factory.sweep.space import apply_params

SWEEP_TAG = "facefactory.sweep"
"""MLflow tag naming the sweep a trial run belongs to."""
SWEPT_PARAM_PREFIX = "swept."
"""MLflow params of a trial run holding its swept values, ``swept.<dotted key>``."""
CURVE_M = "curve.m"
CURVE_SIMILARITY = "curve.similarity"
"""MLflow params placing a trial on the accuracy-vs-m (or vs-similarity) curve."""


@dataclass(frozen=True)
class SweepSetup:
    """What every trial of one sweep shares (passed to the trial processes by Tune)."""

    base: dict[str, Any]
    """The sweep's resolved config, as a JSON dump."""
    name: str
    directory: str
    pool: str
    parent_run_id: str | None
    reference_avg: float | None


def trial_config(setup: SweepSetup, params: dict[str, Any], trial_name: str) -> FactoryConfig:
    """The sweep's config with the trial's values, its own run name, storage and data; every
    trial evaluates its validation benchmarks each epoch, since ASHA compares trials there (the
    test benchmarks only at the final epoch). In generate mode a repeated seed (``sweep.seeds``)
    also draws the trial's synthetic data afresh (``synthesis.seed``)."""
    config = apply_params(setup.base, params)
    recognizer = config.recognizer
    recognizer.run_name = trial_name
    recognizer.storage = storage.join(setup.directory, "trials")
    recognizer.eval_every = 1
    if config.sweep.mode == "generate":
        if config.sweep.seeds > 1:
            config.synthesis.seed = recognizer.seed
        config.synthesis.out = storage.join(setup.directory, "data", trial_name)
        recognizer.train_on(config.synthesis.out)
    else:
        recognizer.train_on(setup.pool)
    return config


def requested_m(config: FactoryConfig) -> float | None:
    """The trial's position on the CemiFace curve: the middle of its selected m range, or in
    generate mode the mean of its requested m values; None when neither applies."""
    if config.sweep.mode == "select":
        bounds = config.recognizer.select.m
        return None if bounds is None else (bounds[0] + bounds[1]) / 2
    m = config.synthesis.m
    if m.kind == "values":
        return sum(m.values) / len(m.values)
    return m.mean if m.kind == "normal" else (m.low + m.high) / 2


def selected_similarity(config: FactoryConfig) -> float | None:
    bounds = config.recognizer.select.similarity
    return None if bounds is None else (bounds[0] + bounds[1]) / 2


def run_trial(params: dict[str, Any], setup: SweepSetup) -> None:
    """The Tune function trainable: everything one trial does."""
    from ray import tune

    trial_name = tune.get_context().get_trial_name()
    config = trial_config(setup, params, trial_name)
    # the sweep's own store (pinned in its config) wins over whatever this worker's environment
    # says: the trial's run is a child of the parent run in that store
    with environment_variable("MLFLOW_TRACKING_URI", config.runtime.mlflow_tracking_uri):
        _run(config, setup, params, trial_name)


def _run(config: FactoryConfig, setup: SweepSetup, params: dict[str, Any],
         trial_name: str) -> None:
    import mlflow
    from ray.tune.integration.ray_train import TuneReportCallback

    from factory.runtime import mlflow_tracking_uri
    from factory.synth.synthesize import synthesize
    from factory.train.recognizer import ParentRun, train_recognizer

    if config.sweep.mode == "generate":
        synthesize(config)
    curve = {CURVE_M: requested_m(config), CURVE_SIMILARITY: selected_similarity(config)}
    parent = ParentRun(
        run_id=setup.parent_run_id,
        tags={SWEEP_TAG: setup.name, "facefactory.trial": trial_name},
        params={**{f"{SWEPT_PARAM_PREFIX}{key}": value for key, value in params.items()},
                **{key: value for key, value in curve.items() if value is not None}},
    )
    run = train_recognizer(config, parent=parent, callbacks=[TuneReportCallback()])
    run_id = run.metrics.get("mlflow_run_id")
    if run_id and setup.reference_avg is not None and "avg_acc" in run.metrics:
        mlflow.set_tracking_uri(mlflow_tracking_uri(config.runtime))
        mlflow.MlflowClient().log_metric(run_id, "gtr",
                                         setup.reference_avg - float(run.metrics["avg_acc"]))
