"""``factory sweep``: a Ray Tune experiment whose trials each train and evaluate a recognizer.

In ``select`` mode every trial trains on a metadata selection of one synthesised pool (the pool
is synthesised from the config's synthesis section first if it is missing), so sweeping m
ranges or similarity groups never regenerates images; in ``generate`` mode each trial
synthesises its own dataset first, for parameters that only exist at generation time.

The sweep is an MLflow parent run and each trial a nested run. A rerun of the same sweep
(same ``sweep.name`` and storage) restores the Tune experiment: finished trials are kept, and
unfinished ones resume from their own latest checkpoints. Restoring unpickles Tune's state, so
Tune works in a private temporary folder of this process: a rerun restores from a copy of the
state this user's sweep sealed, checked as it is copied, and the sweep's folder receives the
experiment, sealed, when ``fit`` ends (:mod:`factory.sweep.seal`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import tempfile
import threading
from dataclasses import dataclass

from factory import layout, storage
from factory.config import FactoryConfig
from factory.errors import FormatError, UserError
from factory.eval.benchmarks import VALIDATION_AVERAGE, validation_benchmarks
from factory.locking import LOCK_FILE, hold_lock
from factory.provenance import code_version
from factory.runtime import init_ray, mlflow_tracking_uri, ray_address, setup_mlflow
from factory.sweep.compare import (
    CURVE_FILE,
    PARENT_TAG,
    REFERENCE_METRIC,
    accuracy_curve_png,
    comparison_table,
    sweep_rows,
)
from factory.sweep.seal import copy_sealed, publish
from factory.sweep.space import (
    apply_params,
    corner_params,
    grid_size,
    seed_values,
    similarity_groups,
    tune_space,
)
from factory.sweep.trial import SweepSetup, run_trial
from factory.train.workers import copies_that_fit
from factory.synth.measure import measure_pool
from factory.synth.layout import MANIFEST_FILE
from factory.synth.synthesize import synthesize
from factory.tracking import MAX_PARAM_LENGTH, flatten

STOPPED_EARLY_TAG = "facefactory.stopped_after_epochs"
STATE_FILE = "sweep.json"
"""In the sweep's directory: the MLflow parent run id, so a rerun logs under the same parent."""
COMPARISON_FILE = "comparison.txt"
SWEEP_FILES = (STATE_FILE, COMPARISON_FILE, CURVE_FILE, LOCK_FILE)
"""What the sweep itself writes beside Tune's files (read back only as JSON, or never); the
lock is there while a sweep runs, restoring included (factory.locking)."""


@dataclass
class SweepOutcome:
    directory: str
    table: str
    figure: str | None
    trials: int


def reference_avg(config: FactoryConfig) -> float | None:
    """The real-trained recognizer's AVG for GtR: ``sweep.reference``'s ``metrics.json``, else
    this config's recognizer run when it has finished; None when neither exists."""
    uri = storage.join(config.sweep.reference or layout.recognizer_final_uri(config),
                       "metrics.json")
    if not storage.exists(uri):
        if config.sweep.reference:
            raise UserError(f"{uri}: not found (sweep.reference must be a finished recognizer "
                            "run's final checkpoint)")
        return None
    average = storage.read_json_object(uri).get("avg_acc")
    if isinstance(average, bool) or not isinstance(average, (int, float)):
        raise UserError(f"{uri}: expected a numeric avg_acc entry (was the run evaluated?)")
    return float(average)


def check_validation(config: FactoryConfig) -> list[str]:
    """The validation benchmarks the sweep selects on; UserError when there are none, or when
    ``sweep.metric`` is not one of their metrics (a sweep never selects on test)."""
    uris = validation_benchmarks(config)
    if not uris:
        raise UserError(
            "evaluate.validation_benchmarks: a sweep selects on validation benchmarks and none "
            f"were found (the face world's are {layout.validation_benchmark_uris(config)[:1]}...; "
            "build them with `factory faceworld`, or list .bin files there)")
    names = [os.path.basename(uri).removesuffix(".bin") for uri in uris]
    metric = config.sweep.metric
    if metric != VALIDATION_AVERAGE and metric.split("/", 1)[0] not in names:
        raise UserError(f"sweep.metric: {metric!r} is not a validation metric (expected "
                        f"{VALIDATION_AVERAGE} or <name>/acc of {', '.join(names)}; test "
                        "figures such as avg_acc are reported, never selected on)")
    return uris


def ensure_pool(config: FactoryConfig, cli_address: str | None) -> str:
    """The select-mode pool; when it is not there yet, the real data of ``sweep.measure``
    measured into shards, else a synthesis from the synthesis section."""
    pool = layout.sweep_pool_uri(config)
    if storage.exists(storage.join(pool, MANIFEST_FILE)):
        return pool
    if config.sweep.measure.data:
        measure_pool(config, pool)
        return pool
    print(f"== sweep pool {pool} is missing: synthesising it (synthesis section)")
    pool_config = config.model_copy(deep=True)
    pool_config.synthesis.out = pool
    synthesize(pool_config, cli_address)
    return pool


def concurrent_trials(config: FactoryConfig, local: bool) -> int:
    """``sweep.max_concurrent_trials``, or as many trials as the cluster holds at once (a
    trial is its driver, ``sweep.trial_cpus``, plus ``recognizer.workers``). On a local
    cluster a trial that cannot fit at all is refused; a remote one may autoscale, so there it
    runs one at a time."""
    fits = copies_that_fit(config.recognizer.workers, local,
                           "recognizer.workers (plus sweep.trial_cpus per trial)",
                           extra_cpus=config.sweep.trial_cpus)
    return config.sweep.max_concurrent_trials or max(1, math.floor(fits))


def _parent_run(config: FactoryConfig, directory: str, reference: float | None) -> str:
    """The sweep's MLflow parent run, RUNNING until the sweep ends: the one recorded in the
    sweep directory (a rerun), else a new one with the sweep's config as params."""
    import mlflow

    setup_mlflow(config.runtime)
    client = mlflow.MlflowClient()
    state_uri = storage.join(directory, STATE_FILE)
    if storage.exists(state_uri):
        run_id = storage.read_json_object(state_uri).get("parent_run_id")
        if not isinstance(run_id, str):
            raise FormatError(f"{state_uri}: expected the sweep's parent_run_id (an MLflow run "
                              "id); remove the sweep's folder to start it afresh")
        client.update_run(run_id, status="RUNNING")
        return run_id
    experiment = client.get_experiment_by_name(config.runtime.experiment)
    tags = {PARENT_TAG: config.sweep.name, "code_version": code_version(), "stage": "sweep",
            "mlflow.runName": config.sweep.name}
    run_id = client.create_run(experiment.experiment_id, run_name=config.sweep.name,
                               tags=tags).info.run_id
    params = flatten({"sweep": config.sweep.model_dump(mode="json"),
                      "recognizer": config.recognizer.model_dump(mode="json")})
    for key, value in params.items():
        client.log_param(run_id, key, str(value)[:MAX_PARAM_LENGTH])
    if reference is not None:
        client.log_metric(run_id, REFERENCE_METRIC, reference)
    storage.write_text(state_uri, json.dumps({"parent_run_id": run_id,
                                              "code_version": code_version(),
                                              "config": config.model_dump(mode="json")},
                                             indent=2))
    return run_id


def _close_open_trials(config: FactoryConfig, parent_run_id: str) -> None:
    """Close the trial runs Tune ended before their training loop could: FINISHED when every
    epoch ran, else KILLED and tagged as stopped early (by ASHA, or an interruption)."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(config.runtime.experiment)
    for run in client.search_runs(
            [experiment.experiment_id], max_results=10000,
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
                          "and attributes.status = 'RUNNING'"):
        epochs = int(run.data.metrics.get("epoch", -1)) + 1
        if epochs >= config.recognizer.optimizer.epochs:
            client.set_terminated(run.info.run_id, "FINISHED")
        else:
            client.set_tag(run.info.run_id, STOPPED_EARLY_TAG, str(epochs))
            client.set_terminated(run.info.run_id, "KILLED")


def run_sweep(config: FactoryConfig, cli_address: str | None = None) -> SweepOutcome:
    """Run (or resume) the configured sweep; returns the comparison of its trials. The sweep
    folder's lock (:mod:`factory.locking`) is held throughout: a second run of the same sweep
    is refused at once. Its trials lock their own folders below it (``trials/<trial>``,
    ``data/<trial>``), never this one."""
    import mlflow

    sweep = config.sweep
    if not sweep.space and not sweep.similarity_groups:
        raise UserError("sweep.space: nothing to sweep (give at least one parameter, or "
                        "sweep.similarity_groups)")
    for params in corner_params(sweep.space):
        apply_params(config.model_dump(mode="json"), params)  # a bad key fails here, at once
    reference = reference_avg(config)
    directory = storage.join(layout.sweep_storage_uri(config), sweep.name)
    with hold_lock(directory, "sweep"):  # before its Tune state or sweep.json is read
        storage.ensure_writable(directory)
        with tempfile.TemporaryDirectory(prefix="facefactory-tune-") as private:
            results, interrupted, parent_run_id = _run_tune(config, cli_address, directory,
                                                            reference, private)
        if interrupted:
            raise KeyboardInterrupt  # Tune saved the experiment state; a rerun restores it
        setup_mlflow(config.runtime)
        _close_open_trials(config, parent_run_id)
        mlflow.MlflowClient().set_terminated(
            parent_run_id, "FAILED" if any(result.error for result in results) else "FINISHED")
        errors = [str(result.error).splitlines()[0] for result in results if result.error]
        rows = sweep_rows(config.runtime.experiment, sweep.name)
        table = comparison_table(rows)
        storage.write_text(storage.join(directory, COMPARISON_FILE), table + "\n")
        figure = _curve(rows, directory, parent_run_id)
        if errors:
            raise UserError(f"sweep {sweep.name}: {len(errors)} trial(s) failed, first: "
                            f"{errors[0]} (rerun to retry them; finished trials are kept)")
        return SweepOutcome(directory=directory, table=table, figure=figure, trials=len(rows))


def _run_tune(config: FactoryConfig, cli_address: str | None, directory: str,
              reference: float | None, private: str):
    """Start or restore the Tune experiment in ``private``, a temporary folder of this process,
    and fit it; its results, whether Ctrl-C interrupted it, and the MLflow parent run id.

    Tune reads and writes only there (a restore sets the experiment's storage to the folder it
    restores from): a rerun first copies the state sealed in ``directory`` there, refused before
    Ray starts unless it is exactly what this user's sweep sealed, and when ``fit`` ends the
    experiment goes back to ``directory``, sealed (:mod:`factory.sweep.seal`).
    """
    from ray import tune

    sweep = config.sweep
    experiment = os.path.join(private, sweep.name)
    restoring = tune.Tuner.can_restore(directory)
    if restoring:
        copy_sealed(directory, experiment, SWEEP_FILES)  # before Ray, Tune or MLflow start
    check_validation(config)
    init_ray(config.runtime, cli_address)
    pool = ensure_pool(config, cli_address) if sweep.mode == "select" else ""
    groups = similarity_groups(pool, sweep.similarity_groups) if sweep.similarity_groups else None
    parent_run_id = _parent_run(config, directory, reference)

    # the store the parent run is in, as this process resolved it: a trial's process has
    # another working directory (where the default SQLite path would point elsewhere) and the
    # environment its Ray worker started with, so it must not resolve the store again
    base = config.model_copy(deep=True)
    base.runtime.mlflow_tracking_uri = mlflow_tracking_uri(config.runtime)
    setup = SweepSetup(base=base.model_dump(mode="json"), name=sweep.name,
                       directory=directory, pool=pool, parent_run_id=parent_run_id,
                       reference_avg=reference)
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup),
                                    {"CPU": sweep.trial_cpus})
    seeds = seed_values(config.recognizer.seed, sweep.seeds)
    param_space = tune_space(sweep.space, groups, seeds)
    concurrent = concurrent_trials(config, local=ray_address(config.runtime, cli_address) is None)
    expected = grid_size(sweep.space, groups) * sweep.num_samples * len(seeds)
    if restoring:
        print(f"== sweep {sweep.name}: restoring {directory} (finished trials are kept)")
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True,
                                   resume_errored=True, param_space=param_space)
    else:
        print(f"== sweep {sweep.name}: {expected} trials, {concurrent} at a time "
              f"({code_version()})")
        tuner = _new_tuner(config, trainable, param_space, concurrent, private)
    try:
        results, interrupted = _fit(tuner)
    finally:
        publish(experiment, directory)  # this run's state, finished or interrupted
    return results, interrupted, parent_run_id


def _new_tuner(config: FactoryConfig, trainable, param_space, concurrent: int, private: str):
    """A new Tune experiment for the sweep, ``concurrent`` trials at a time, stored in the
    private folder ``private``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    sweep = config.sweep
    scheduler = None
    if sweep.asha.enabled:
        # max_t one past the last epoch: ASHA then never stops a trial at its final report,
        # which would kill the trial before its Ray Train run has released its workers.
        scheduler = ASHAScheduler(max_t=config.recognizer.optimizer.epochs + 1,
                                  grace_period=sweep.asha.grace_period,
                                  reduction_factor=sweep.asha.reduction_factor)
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(metric=sweep.metric, mode="max", scheduler=scheduler,
                                    num_samples=sweep.num_samples,
                                    max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(name=sweep.name, storage_path=private, verbose=1),
    )


TUNE_CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"
"""Logs "Trial task failed for trial <name>", with the trial's traceback, in the sweep's
process."""


class _TrialUserErrorsOnOneLine(logging.Filter):
    """A trial that failed on a :class:`UserError` (a tracking store that did not answer, a bad
    input) is logged as one line ending in the error's message, without the trial's traceback:
    the user has the cause to fix, not a bug to report, and the sweep ends with that line too.
    Ray raises a trial's error as a ``RayTaskError`` that is also an instance of the error's own
    class, carrying the error itself as ``cause``."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, UserError):
            cause = getattr(error, "cause", error)
            record.msg = f"{record.getMessage()}: {' '.join(str(cause).split())}"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


def _fit(tuner):
    """``tuner.fit()``, and whether Ctrl-C (SIGINT) interrupted it.

    Tune handles SIGINT during ``fit`` itself: it saves the experiment state, stops the trials
    and returns normally, marking unstarted trials terminated, so the results cannot tell. Its
    handler puts the previous one back when it fires, and that is how an interruption shows.
    A trial that fails on a user error is logged on one line (:class:`_TrialUserErrorsOnOneLine`).
    """
    before = signal.getsignal(signal.SIGINT)
    catches = (threading.current_thread() is threading.main_thread()
               and os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") == "0")
    tune_logger = logging.getLogger(TUNE_CONTROLLER_LOGGER)
    if not any(isinstance(f, _TrialUserErrorsOnOneLine) for f in tune_logger.filters):
        tune_logger.addFilter(_TrialUserErrorsOnOneLine())
    results = tuner.fit()
    interrupted = catches and signal.getsignal(signal.SIGINT) is before
    if catches:
        signal.signal(signal.SIGINT, before)
    return results, interrupted


def _curve(rows, directory: str, parent_run_id: str) -> str | None:
    """The accuracy-vs-m PNG in the sweep's directory (any URI) and on its parent MLflow run."""
    import mlflow

    with tempfile.TemporaryDirectory() as scratch:
        path = accuracy_curve_png(rows, os.path.join(scratch, CURVE_FILE))
        if path is None:
            return None
        mlflow.MlflowClient().log_artifact(parent_run_id, path)
        target = storage.join(directory, CURVE_FILE)
        with open(path, "rb") as stream:
            storage.write_bytes(target, stream.read())
    return target
