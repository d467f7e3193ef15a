"""MLflow logging for one process: params from the resolved config, metrics, artefacts.

:class:`RunTracker` is a no-op when disabled, so a Ray Train loop creates one on every rank and
enables it on rank 0 only. Runs record the resolved config and the code version as params and
tags, the versions of the libraries results depend on as ``package.<name>`` tags, and resume by
run id after a restart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from factory.provenance import package_versions

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
    """One MLflow run, or nothing at all when ``enabled`` is False."""

    def __init__(self, enabled: bool, tracking_uri: str, experiment: str,
                 artifact_location: str = "") -> None:
        self.enabled = enabled
        self.run_id: str | None = None
        if enabled:
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
        given; params are logged on a fresh start."""
        if not self.enabled:
            return None
        import mlflow

        fresh = run_id is None
        run = mlflow.start_run(run_id=run_id, run_name=run_name if fresh else None,
                               parent_run_id=parent_run_id if fresh else None)
        self.run_id = run.info.run_id
        mlflow.set_tags({f"package.{name}": version
                         for name, version in package_versions().items()} | dict(tags or {}))
        if params and run_id is None:
            mlflow.log_params({k: str(v)[:MAX_PARAM_LENGTH] for k, v in flatten(params).items()})
        return self.run_id

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_metrics(numeric_metrics(metrics), step=step)

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_artifact(local_path, artifact_path)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_artifacts(local_dir, artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id is not None:
            import mlflow

            mlflow.end_run(status=status)
