"""What every Ray Train loop in the factory shares: the trainer, the worker set-up, precision.

``make_trainer`` turns a ``WorkersConfig`` into a ``TorchTrainer`` (workers, CPUs, GPUs, the
run's storage, restarts from the latest checkpoint) and ``fit`` runs it; ``copies_that_fit``
refuses, on a local cluster, a worker set that could never be scheduled; ``worker_context`` is
the first thing a training loop calls on each worker; ``autocast_and_scaler`` is mixed precision
on GPU only.

A :class:`UserError` raised on a worker (a corrupt record met while training) is deterministic:
restarting the worker group from its checkpoint would meet it again. So it ends the run at once,
without the restarts ``max_failures`` allows for lost workers, and reaches the user as the same
one line the driver would have printed, without the worker's traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from tqdm import tqdm

from factory import storage
from factory.config import WorkersConfig
from factory.errors import UserError, disk_full
from factory.runtime import environment_variable


def make_trainer(loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any],
                 workers: WorkersConfig, run_name: str, storage_uri: str, max_failures: int,
                 callbacks: Sequence[Any] = (), keep_checkpoints: int | None = 2):
    """A ``TorchTrainer`` running ``loop`` on the configured workers, checkpointing to
    ``storage_uri/run_name`` (the ``keep_checkpoints`` latest kept, None: all) and restarting
    failed worker groups up to ``max_failures`` times from the latest one; ``callbacks`` go to
    its run. Ray Train logs to the console at WARNING and above only."""
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    resources = {"CPU": workers.cpus_per_worker}
    if workers.use_gpu:
        resources["GPU"] = workers.gpus_per_worker
    storage_path = storage_uri if storage.is_remote(storage_uri) else storage.resolve(storage_uri)[1]
    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers.num_workers, use_gpu=workers.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
            callbacks=[*callbacks, _stop_on_user_error()],
            # Ray Train's INFO lines (a "Checkpoint successfully created" per report) go to the
            # session's logs/train files only; its warnings and errors still reach the console.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


REPORT_POLL_VARIABLE = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
"""Ray Train's controller polls its workers (health and reports) this often; Ray Train passes
the driver's value on to the controller it starts."""


def fit(trainer: Any, report_poll_s: float) -> Any:
    """``trainer.fit()``, its controller polling every ``report_poll_s`` seconds unless
    :data:`REPORT_POLL_VARIABLE` is set; a :class:`UserError` that ended the run is raised as
    itself.

    Each worker's report queue holds one result and the controller empties it once per poll, so
    at Ray's 2 s default a loop that reports every 0.2 s spends 90% of its time waiting (the
    quickstart's synthetic-trained recognizer: 40 epochs of 224 images). A hanging poll is not
    a failure until Ray's worker health-check timeout (10 minutes), so a short poll is safe."""
    from ray.train import ControllerError

    poll = os.environ.get(REPORT_POLL_VARIABLE) or f"{report_poll_s:g}"
    try:
        with environment_variable(REPORT_POLL_VARIABLE, poll):
            return trainer.fit()
    except ControllerError as exc:
        cause = user_error_in(exc.controller_failure)
        if cause is None:
            raise
        raise cause from None


DATALOADER_TRACEBACK = "Original Traceback (most recent call last):"
"""What torch puts in the message of an exception re-raised from a DataLoader process."""


def user_error_in(error: BaseException | None) -> UserError | None:
    """The user's error behind a worker failure, with its one-line message; None for others.
    A full disk (ENOSPC) counts as the user's: it is named with its path and free space.

    An error from a DataLoader process arrives as the same type whose message torch prefixed
    with that process's traceback; its last line is the original message.
    """
    full = disk_full(error) if error is not None else None
    if full is not None:
        return full
    if not isinstance(error, UserError):
        return None
    message = str(error)
    if DATALOADER_TRACEBACK in message:
        last = message.rstrip().splitlines()[-1]
        message = last.split(": ", 1)[1] if ": " in last else last
    return type(error)(message)


def _stop_on_user_error() -> Any:
    """A Ray Train callback (it runs in the controller) that fails the run, without restarts,
    as soon as a worker reports a :class:`UserError`: raising from the callback is a controller
    error, which Ray Train does not retry."""
    from ray.train import UserCallback

    class StopOnUserError(UserCallback):
        def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]):
            for error in worker_exceptions.values():
                cause = user_error_in(error)
                if cause is not None:
                    _hide_user_error_tracebacks(RAY_TRAIN_CONTROLLER_LOGGER)
                    raise cause

    return StopOnUserError()


class _HideUserErrorTracebacks(logging.Filter):
    """Drops the traceback Ray Train logs for an error that is the user's: the driver prints
    its one line instead. Ray logs inside its ``except`` block, so the error is the record's
    ``exc_info`` or, where it formats the traceback itself, the one ``sys.exc_info`` holds."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return user_error_in(error) is None


def _hide_user_error_tracebacks(logger_name: str) -> None:
    """Installs the filter on one of Ray Train's loggers, once per process."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _HideUserErrorTracebacks) for f in logger.filters):
        logger.addFilter(_HideUserErrorTracebacks())


RAY_TRAIN_WORKER_LOGGER = "ray.train.v2._internal.util"
"""Logs a failed training function's traceback, on the worker."""
RAY_TRAIN_CONTROLLER_LOGGER = "ray.train.v2._internal.execution.controller.controller"
"""Logs the traceback of an error raised in the controller (a callback's among them)."""


def _quiet_report_lines() -> None:
    """Ray Train 2.60 logs "Reporting training result N: TrainingReport(...)" at INFO on every
    worker for every report, through a logger named after its source file, which its
    ``LoggingConfig`` does not reach; the line stays out of the console at WARNING."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray version: nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def copies_that_fit(workers: WorkersConfig, local: bool, field: str,
                    extra_cpus: float = 0.0) -> float:
    """How many copies of ``workers`` (plus ``extra_cpus`` each, a trial's driver) the Ray
    cluster holds at once.

    On a local cluster fewer than one is refused with one line naming ``field``: Ray Train
    would wait for the resources forever. A remote cluster may autoscale, so there any demand
    is let through. Call after ``init_ray``.
    """
    import ray

    cpus = workers.num_workers * workers.cpus_per_worker + extra_cpus
    gpus = workers.num_workers * workers.gpus_per_worker if workers.use_gpu else 0.0
    available = ray.cluster_resources()
    fits = available.get("CPU", 0.0) / cpus
    if gpus:
        fits = min(fits, available.get("GPU", 0.0) / gpus)
    if local and fits < 1:
        raise UserError(
            f"{field}: needs {cpus:g} CPUs{f' and {gpus:g} GPUs' if gpus else ''} at once, the "
            f"local Ray cluster has {available.get('CPU', 0.0):g} CPUs and "
            f"{available.get('GPU', 0.0):g} GPUs; lower {field} or raise runtime.num_cpus")
    return fits


class ProgressLines:
    """A training run's progress as whole console lines: tqdm's meter (share done, count,
    elapsed<remaining, rate) with the run's own text after it.

    A Ray Train worker's output reaches the driver line by line, each line prefixed with the
    worker's name, so a tqdm bar's in-place redraws would arrive as fragments and blank
    clearing lines. :meth:`update` prints a line at most every ``interval`` seconds;
    :meth:`line` prints one now (an epoch's or a logging step's summary). Ray Train patches
    ``print`` on its workers to send each message to its logger as well as to stdout (which
    shows it twice), so lines are written to the stream itself. Silent unless ``enabled``
    (rank 0)."""

    def __init__(self, desc: str, total: int, unit: str, enabled: bool, interval: float,
                 initial: int = 0) -> None:
        self.desc, self.total, self.unit, self.enabled = desc, total, unit, enabled
        self.interval, self.initial, self.n = interval, initial, initial
        self.started = self.last_line = time.perf_counter()

    def update(self, count: int = 1, between_lines: bool = True) -> None:
        """Count ``count`` more; print a line if ``interval`` has passed since the last one
        (``between_lines`` False: a summary line follows at once, so none)."""
        self.n += count
        if between_lines and self.enabled and \
                time.perf_counter() - self.last_line >= self.interval:
            self.line()

    def line(self, text: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        meter = tqdm.format_meter(self.n, self.total, now - self.started, prefix=self.desc,
                                  unit=self.unit, initial=self.initial)
        sys.stdout.write(f"{meter} {text}".rstrip() + "\n")
        sys.stdout.flush()
        self.last_line = now


def worker_context(workers: WorkersConfig, seed: int) -> tuple[int, int, torch.device]:
    """On a Ray Train worker: its rank, the world size and its device, with torch's threads
    sized to the worker's CPUs and the seed set."""
    import ray.train
    import ray.train.torch

    _hide_user_error_tracebacks(RAY_TRAIN_WORKER_LOGGER)
    _quiet_report_lines()
    context = ray.train.get_context()
    torch.set_num_threads(max(1, int(workers.cpus_per_worker)))
    torch.manual_seed(seed)
    return context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device()


def autocast_and_scaler(
    device: torch.device, enabled: bool
) -> tuple[Callable[[], AbstractContextManager], torch.amp.GradScaler]:
    """bf16 autocast where the GPU supports it, else fp16 with a grad scaler; off on CPU."""
    use = enabled and device.type == "cuda"
    dtype = torch.bfloat16 if use and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use and dtype == torch.float16)
    return (lambda: torch.autocast(device.type, dtype=dtype, enabled=use)), scaler
