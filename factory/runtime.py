"""The one place that connects to Ray and MLflow.

Ray: an address from ``--address``, ``RAY_ADDRESS`` or the config joins an existing cluster;
otherwise a local cluster starts, sized to this machine (or ``runtime.num_cpus``). Callers that
start actor pools must leave CPU for the tasks that feed them (fractional ``num_cpus`` per
actor): on a 2-CPU machine a pool that takes both CPUs starves its read tasks and hangs.

MLflow: ``MLFLOW_TRACKING_URI`` or ``runtime.mlflow_tracking_uri``, else a SQLite file in the
current directory, made absolute so Ray workers (whose working directory differs) share it; a
SQLite store's artifacts go to ``mlartifacts/`` beside it (:func:`factory.tracking.use_experiment`).
"""

from __future__ import annotations

import logging
import os

from factory.config import RuntimeConfig

DEFAULT_MLFLOW_DB = "mlflow.db"
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
"""Where Ray warns that a new local cluster has token authentication on."""
RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress"
"""Where Ray Data warns that its progress bars are off."""


def ray_address(runtime: RuntimeConfig, cli_address: str | None = None) -> str | None:
    """The cluster to join, by precedence ``--address`` > ``RAY_ADDRESS`` > config; or None."""
    return cli_address or os.environ.get("RAY_ADDRESS") or runtime.ray_address


def init_ray(runtime: RuntimeConfig, cli_address: str | None = None) -> None:
    """Connect to (or start) Ray once per process; a no-op when already connected."""
    import ray

    if ray.is_initialized():
        return
    address = ray_address(runtime, cli_address)
    common = dict(
        logging_level=logging.WARNING,
        log_to_driver=True,
        runtime_env={"env_vars": {"MLFLOW_TRACKING_URI": mlflow_tracking_uri(runtime)}},
    )
    if address:
        ray.init(address=address, **common)
    else:
        # A new local cluster gets Ray's token authentication by default, and Ray warns that it
        # did: a line the user has nothing to do about. The authentication stays on; the
        # warning stays out (a RAY_AUTH_MODE the user sets is Ray's to handle, as before).
        logging.getLogger(RAY_AUTH_LOGGER).setLevel(logging.ERROR)
        # The dashboard stays on: Ray Train's state API (its placement-group cleaner) needs it.
        ray.init(num_cpus=runtime.num_cpus or os.cpu_count() or 1, include_dashboard=True,
                 dashboard_host="127.0.0.1", **common)


def quiet_ray_data() -> None:
    """Turn off Ray Data's own progress output for the datasets this process runs.

    A stage that runs a dataset shows one progress bar of its own; Ray Data would add its
    execution plan at the start and, when stdout is not a terminal (a log file, ``tee``), a
    "Total Progress" block every 10 seconds. Both stay in the session's ``ray-data.log``.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # ...and would then warn, once, that its progress bars are off: nothing to act on.
    logging.getLogger(RAY_DATA_PROGRESS_LOGGER).setLevel(logging.ERROR)


def mlflow_tracking_uri(runtime: RuntimeConfig) -> str:
    """The tracking URI every process of a run must agree on."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or runtime.mlflow_tracking_uri
    if uri:
        return uri
    return f"sqlite:///{os.path.abspath(DEFAULT_MLFLOW_DB)}"


def setup_mlflow(runtime: RuntimeConfig) -> str:
    """Point mlflow at the run's tracking store and experiment; returns the tracking URI."""
    from factory.tracking import use_experiment

    uri = mlflow_tracking_uri(runtime)
    use_experiment(uri, runtime.experiment)
    return uri
