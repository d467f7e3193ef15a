"""The driver's side of a Ray Train run, the same for ``train-recognizer`` and
``train-generator``.

:func:`training_run` holds the run folder's lock (:mod:`factory.locking`) for as long as the
driver works on it, so a second run of the same ``run_name`` and storage is refused at once,
and checks the folder is writable before anything of a previous run is read. Inside it,
:meth:`TrainingRun.fit` starts or joins Ray, refuses on a local cluster a worker set that could
never be scheduled, and runs the training loop on the workers with what every loop reads (the
whole config, the MLflow tracking URI, the code version) besides its own entries. Each driver
keeps what is its own: its checks before the lock, its claim on the folder, what it publishes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from factory import storage
from factory.config import FactoryConfig
from factory.locking import hold_lock
from factory.provenance import code_version
from factory.runtime import init_ray, mlflow_tracking_uri, ray_address
from factory.train.workers import copies_that_fit, fit, make_trainer

Section = Literal["recognizer", "generator"]
"""The config section a run trains from; it names the lock's command and the worker field."""


@dataclass
class TrainingRun:
    """A run whose folder's lock is held: ``root`` is ``<storage_uri>/<run_name>``."""

    config: FactoryConfig
    section: Section
    storage_uri: str
    root: str
    cli_address: str | None

    def fit(self, loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any],
            callbacks: Sequence[Any] = (), keep_checkpoints: int | None = 2) -> Any:
        """Run ``loop`` on the section's workers and return Ray Train's result; the loop's
        config is ``loop_config`` plus ``config``, ``tracking_uri`` and ``code_version``."""
        cfg = getattr(self.config, self.section)
        init_ray(self.config.runtime, self.cli_address)
        copies_that_fit(cfg.workers, ray_address(self.config.runtime, self.cli_address) is None,
                        f"{self.section}.workers")
        shared = {"config": self.config.model_dump(mode="json"),
                  "tracking_uri": mlflow_tracking_uri(self.config.runtime),
                  "code_version": code_version()}
        trainer = make_trainer(loop, {**shared, **loop_config}, cfg.workers, cfg.run_name,
                               self.storage_uri, cfg.max_failures, callbacks=callbacks,
                               keep_checkpoints=keep_checkpoints)
        return fit(trainer, cfg.workers.report_poll_s)


@contextmanager
def training_run(config: FactoryConfig, section: Section, storage_uri: str,
                 cli_address: str | None) -> Iterator[TrainingRun]:
    """Hold the lock of the section's run folder under ``storage_uri`` (before its checkpoints
    are read) and check the folder is writable; yields the run to :meth:`TrainingRun.fit`."""
    root = storage.join(storage_uri, getattr(config, section).run_name)
    with hold_lock(root, f"train-{section}"):
        storage.ensure_writable(root)
        yield TrainingRun(config, section, storage_uri, root, cli_address)
