"""MLflow logging for one process: params from the resolved config, metrics, artefacts.

:class:`RunTracker` is a no-op when disabled, so a Ray Train loop creates one on every rank and
enables it on rank 0 only. Runs record the resolved config and the code version as params and
tags, the versions of the libraries results depend on as ``package.<name>`` tags, and resume by
run id after a restart. A run started under a parent takes over the unfinished child of the same
name that an interrupted start left there (before its first checkpoint recorded the run id), so
a rerun logs into that run rather than beside it.

A tracking store that does not answer (a tracking server that is down, the PostgreSQL server
behind it, or the database a ``postgresql://`` tracking URI names) is a
:class:`TrackingStoreError`: one line naming the store with its password hidden
(:func:`redact`), once MLflow's own retries are spent (an HTTP store: about four minutes, set by
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``; a database
named directly: about 100 seconds).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from factory.errors import UserError
from factory.provenance import package_versions, platform_tags

_METRIC_KEY = re.compile(r"[^A-Za-z0-9_\-./ ]")
MAX_PARAM_LENGTH = 6000


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def metric_key(key: str) -> str:
    """MLflow admits letters, digits and ``_-./ `` in metric names: ``tar@far=1e-3`` ->
    ``tar_far_1e-3``."""
    return _METRIC_KEY.sub("_", key.replace("@far=", "_far_"))


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics dict, with MLflow-safe keys."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            out[metric_key(key)] = float(value)
    return out


SQLITE_PREFIX = "sqlite:///"
ARTIFACT_DIR = "mlartifacts"


def artifact_root(tracking_uri: str) -> str | None:
    """Where runs of a local SQLite store keep their artifacts: ``mlartifacts/`` beside the
    database file, so they stay with it (MLflow's default is ``./mlruns`` of whatever
    directory the creating process ran in). None for other stores, which decide themselves."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    database = os.path.abspath(tracking_uri[len(SQLITE_PREFIX):])
    return Path(os.path.dirname(database), ARTIFACT_DIR).as_uri()


REDACTED = "***"


def redact(uri: str) -> str:
    """``uri`` as a message may show it: a password in it, as ``user:password@host`` or as
    libpq's ``password=`` query parameter, replaced by ``***``."""
    parts = urllib.parse.urlsplit(uri)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:{REDACTED}@{host}"
    query = "&".join(f"{item.split('=', 1)[0]}={REDACTED}"
                     if item.split("=", 1)[0].lower() == "password" else item
                     for item in parts.query.split("&")) if parts.query else ""
    if (netloc, query) == (parts.netloc, parts.query):
        return uri  # unchanged, and not rebuilt (urlunsplit rewrites sqlite:////path)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


class TrackingStoreError(UserError):
    """The MLflow tracking store did not answer. A rerun once it answers again resumes from
    the runs' checkpoints, into the same MLflow runs (a recognizer logs each epoch before it
    checkpoints it, so the epochs the store did not take are trained and logged again)."""


def store_unavailable(error: BaseException) -> TrackingStoreError | None:
    """The one-line error for an MLflow call that failed because the tracking store (the
    process's MLflow tracking URI) did not answer; None for any other error.

    Looked for along the exception's chain: MLflow's HTTP client gave up on a tracking server
    that refused the connection, timed out or kept answering 5xx (``requests``' ConnectionError,
    Timeout or RetryError beneath an MlflowException), or a database could not be used
    (SQLAlchemy's OperationalError). The line carries the innermost cause's first line, such as
    "[Errno 111] Connection refused" or "too many 503 error responses"."""
    if "mlflow" not in sys.modules:  # no MLflow call ran in this process
        return None
    import mlflow
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and all(cause is not seen for seen in chain):
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    http = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
            requests.exceptions.RetryError)
    through_mlflow = any(isinstance(link, MlflowException) for link in chain)
    if not any(isinstance(link, sqlalchemy.exc.OperationalError)
               or (through_mlflow and isinstance(link, http)) for link in chain):
        return None
    uri = mlflow.get_tracking_uri()
    password = urllib.parse.urlsplit(uri).password
    lines = str(chain[-1]).strip().splitlines()
    reason = lines[0] if lines else type(chain[-1]).__name__
    if password:
        reason = reason.replace(password, REDACTED)
    return TrackingStoreError(
        f"MLflow tracking store {redact(uri)} unavailable: {reason}; start it (or point "
        "runtime.mlflow_tracking_uri or MLFLOW_TRACKING_URI at one that runs) and rerun: "
        "finished work is kept and the run resumes")


@contextlib.contextmanager
def tracking_store() -> Iterator[None]:
    """Within the block, MLflow calls that find the tracking store unavailable raise
    :class:`TrackingStoreError` (a :class:`UserError`, one line) instead of MLflow's error: on a
    Ray Train worker that ends the run at once, as a user error, rather than restarting the
    workers against the same unavailable store."""
    try:
        yield
    except Exception as exc:
        lost = store_unavailable(exc)
        if lost is None:
            raise
        raise lost from None


def use_experiment(tracking_uri: str, experiment: str, artifact_location: str = "") -> None:
    """Point mlflow at ``tracking_uri`` and make ``experiment`` active, creating it when it does
    not exist yet with its artifacts at ``artifact_location`` (an existing experiment keeps its
    own), else beside a local store (:func:`artifact_root`)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    root = artifact_location or artifact_root(tracking_uri)
    if root is not None and mlflow.get_experiment_by_name(experiment) is None:
        try:
            mlflow.create_experiment(experiment, artifact_location=root)
        except MlflowException:  # another process (a Ray worker) created it first
            pass
    mlflow.set_experiment(experiment)


class RunTracker:
    """One MLflow run, or nothing at all when ``enabled`` is False. Every MLflow call runs
    within :func:`tracking_store`."""

    def __init__(self, enabled: bool, tracking_uri: str, experiment: str,
                 artifact_location: str = "") -> None:
        self.enabled = enabled
        self.run_id: str | None = None
        if enabled:
            with tracking_store():
                use_experiment(tracking_uri, experiment, artifact_location)

    def start(
        self,
        run_name: str,
        run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> str | None:
        """Start (or, with ``run_id``, resume) the run, as a child of ``parent_run_id`` when
        given; a fresh start under a parent takes over an unfinished child named ``run_name``
        (:func:`unfinished_child`). Params are logged unless resuming by ``run_id`` (a run
        taken over logs them again: MLflow accepts a param logged twice with one value)."""
        if not self.enabled:
            return None
        import mlflow

        with tracking_store():
            fresh = run_id is None
            if fresh and parent_run_id is not None:
                run_id = unfinished_child(parent_run_id, run_name)
            new = run_id is None
            run = mlflow.start_run(run_id=run_id, run_name=run_name if new else None,
                                   parent_run_id=parent_run_id if new else None)
            self.run_id = run.info.run_id
            mlflow.set_tags({f"package.{name}": version
                             for name, version in package_versions().items()}
                            | platform_tags() | dict(tags or {}))
            if params and fresh:
                mlflow.log_params({k: str(v)[:MAX_PARAM_LENGTH]
                                   for k, v in flatten(params).items()})
        return self.run_id

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if self.enabled:
            import mlflow

            with tracking_store():
                mlflow.log_metrics(numeric_metrics(metrics), step=step)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        if self.enabled:
            import mlflow

            with tracking_store():
                mlflow.log_artifact(local_path, artifact_path)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        if self.enabled:
            import mlflow

            with tracking_store():
                mlflow.log_artifacts(local_dir, artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id is not None:
            import mlflow

            with tracking_store():
                mlflow.end_run(status=status)


def unfinished_child(parent_run_id: str, run_name: str) -> str | None:
    """The id of the child run named ``run_name`` under ``parent_run_id`` that is not FINISHED,
    if there is one: what a start interrupted before the run's first checkpoint (which records
    its id) left behind, such as a sweep trial whose epoch could not be logged."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    for run in client.search_runs([experiment_id], max_results=10000,
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
                                                "and attributes.status != 'FINISHED'"):
        if run.info.run_name == run_name:
            return run.info.run_id
    return None
