"""``factory train-recognizer``: margin-loss training of an IResNet under Ray Train.

The driver validates the inputs, then a ``TorchTrainer`` runs :func:`train_loop` on every worker
(DDP over gloo on CPUs, NCCL on GPUs; workers, CPUs and GPUs from config). Each epoch rank 0
evaluates the validation benchmarks when due (``eval_every``) and the test benchmarks at the
final epoch only, logs to MLflow, then writes a checkpoint (so an epoch whose metrics the
tracking store did not take is trained again on resume); the other ranks only train. The run
selects nothing: its published checkpoint is the final epoch's, reported on test. A rerun
with the same ``run_name`` and storage resumes from the latest checkpoint, as does Ray Train
itself after a worker failure.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from factory import layout, storage
from factory.config import FactoryConfig, RecognizerConfig, ShardSelectionConfig
from factory.eval.benchmarks import (
    VALIDATION_AVERAGE,
    EpochEvaluation,
    backbone_embedder,
    evaluation_benchmarks,
    validation_benchmarks,
)
from factory.errors import UserError
from factory.eval.verification import plot_roc
from factory.formats.dataset import open_checked, open_dataset, open_training_data
from factory.models.heads import MarginClassifier
from factory.models.iresnet import build_backbone
from factory.provenance import platform_record
from factory.tracking import RunTracker
from factory.checkpoints.recognizer import STATE_FILE, load_state, save_checkpoint
from factory.train.driver import training_run
from factory.train.workers import ProgressLines, autocast_and_scaler, worker_context
from factory.train.samples import TrainingSamples
from factory.train.schedule import lr_multiplier

PROGRESS_SECONDS = 20.0  # at most one progress line per this many seconds between epoch lines


class Recognizer(nn.Module):
    """Backbone plus margin classifier; ``forward`` returns the loss, so DDP wraps one module."""

    def __init__(self, backbone: nn.Module, head: MarginClassifier) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        return self.head(self.backbone(images), labels, weights)


def build_recognizer(cfg: RecognizerConfig, num_classes: int) -> Recognizer:
    backbone = build_backbone(**cfg.backbone.model_dump())
    head = MarginClassifier(
        cfg.backbone.embedding_size,
        num_classes,
        margin=cfg.head.margin,
        scale=cfg.head.scale,
        margin_value=cfg.head.margin_value,
    )
    return Recognizer(backbone, head)


def optimizer_digest(optimizer: torch.optim.Optimizer) -> float:
    """A fingerprint of the optimizer's momentum buffers, to show a resume restored them."""
    total = 0.0
    for state in optimizer.state.values():
        buffer = state.get("momentum_buffer")
        if buffer is not None:
            total += float(buffer.detach().abs().double().sum())
    return total


def training_loader(samples: TrainingSamples, cfg: RecognizerConfig,
                    batch_size: int) -> torch.utils.data.DataLoader:
    """One worker's shuffled batches of ``samples`` (the last short batch dropped), read by
    ``cfg.workers.loader_workers`` processes, shuffled from ``cfg.seed``."""
    return torch.utils.data.DataLoader(
        samples, batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=cfg.workers.loader_workers,
        generator=torch.Generator().manual_seed(cfg.seed))


def train_loop(loop_config: dict[str, Any]) -> None:
    """The per-worker training loop (runs inside a Ray Train worker)."""
    import ray.train
    import ray.train.torch

    config = FactoryConfig.model_validate(loop_config["config"])
    cfg = config.recognizer
    rank, world, device = worker_context(cfg.workers, cfg.seed)

    real = open_dataset(cfg.domain_mixup.real_data) if cfg.domain_mixup.real_data else None
    samples = TrainingSamples(
        open_training_data([loop_config["data_uri"], *cfg.extra_data], **cfg.select.as_kwargs()),
        cfg.backbone.input_size,
        cfg.augment, cfg.seed,
        real=real, psi=cfg.domain_mixup.psi, real_fraction=cfg.domain_mixup.real_fraction,
    )
    loader = ray.train.torch.prepare_data_loader(
        training_loader(samples, cfg, max(1, cfg.optimizer.batch_size // world)))
    steps_per_epoch = max(1, len(loader))

    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_recognizer(cfg, samples.num_classes).to(memory_format=layout)
    checkpoint = ray.train.get_checkpoint()
    resumed: dict[str, Any] | None = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resumed = load_state(directory)
        model.backbone.load_state_dict(resumed["backbone"])
        model.head.load_state_dict(resumed["head"])
    model = ray.train.torch.prepare_model(model)
    core: Recognizer = model.module if hasattr(model, "module") else model
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.optimizer.lr, momentum=cfg.optimizer.momentum,
        weight_decay=cfg.optimizer.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_multiplier(cfg.optimizer, steps_per_epoch)
    )
    autocast, scaler = autocast_and_scaler(device, cfg.workers.mixed_precision)
    start_epoch, global_step, run_id, resume_digest = 0, 0, None, 0.0
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        scaler.load_state_dict(resumed["scaler"])
        start_epoch, global_step = resumed["epoch"] + 1, resumed["global_step"]
        run_id, resume_digest = resumed.get("mlflow_run_id"), optimizer_digest(optimizer)

    tracker = RunTracker(rank == 0, loop_config["tracking_uri"], config.runtime.experiment,
                         config.runtime.mlflow_artifact_location)
    parent: ParentRun = loop_config["parent"]
    run_id = tracker.start(
        cfg.run_name, run_id=run_id,
        params={"recognizer": cfg.model_dump(mode="json"), "data": loop_config["data_uri"],
                **parent.params},
        tags={"code_version": loop_config["code_version"], "stage": "train-recognizer",
              **parent.tags},
        parent_run_id=parent.run_id,
    )
    evaluation = EpochEvaluation(loop_config["validation_benchmarks"], loop_config["benchmarks"],
                                 cfg.backbone.input_size)
    progress = ProgressLines("recognizer", cfg.optimizer.epochs * steps_per_epoch, "step",
                             rank == 0, PROGRESS_SECONDS, initial=start_epoch * steps_per_epoch)
    for epoch in range(start_epoch, cfg.optimizer.epochs):
        samples.set_epoch(epoch)
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        model.train()
        started, seen, loss_sum = time.perf_counter(), 0, 0.0
        for batch, (images, labels, weights) in enumerate(loader, start=1):
            images = images.to(device, memory_format=layout)
            labels, weights = labels.to(device), weights.to(device)
            with autocast():
                loss = model(images, labels, weights)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            global_step += 1
            seen += len(images)
            loss_sum += float(loss.detach()) * len(images)
            progress.update(between_lines=batch < steps_per_epoch)  # the epoch line follows
        elapsed = time.perf_counter() - started
        metrics: dict[str, Any] = {
            "mlflow_run_id": run_id,
            "epoch": epoch,
            "loss": loss_sum / max(1, seen),
            "lr": scheduler.get_last_lr()[0],
            "images_per_s": seen * world / max(elapsed, 1e-9),
            "global_step": global_step,
            "start_epoch": start_epoch,
            "resume_optimizer_digest": resume_digest,
            "optimizer_digest": optimizer_digest(optimizer),
        }
        final = epoch == cfg.optimizer.epochs - 1
        due = final or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)
        results = []
        if rank == 0 and due:
            scores, results = evaluation.evaluate(backbone_embedder(core.backbone, device), final)
            metrics.update(scores)
        tracker.log_metrics(metrics, step=epoch)
        if final and results and tracker.enabled:
            with tempfile.TemporaryDirectory() as directory:
                tracker.log_artifact(plot_roc(results, os.path.join(directory, "roc.png")))
        _report(rank, metrics, core, optimizer, scheduler, scaler, run_id, loop_config)
        progress.line(_epoch_line(metrics))
    tracker.end()


def _report(rank, metrics, core, optimizer, scheduler, scaler, run_id, loop_config) -> None:
    """Report the epoch's metrics; rank 0 attaches a checkpoint (the call is a barrier)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    state = {
        "backbone": core.backbone.state_dict(),
        "head": core.head.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": metrics["epoch"],
        "global_step": metrics["global_step"],
        "backbone_args": dict(core.backbone.config),
        "num_classes": core.head.weight.shape[0],
        "config": loop_config["config"]["recognizer"],
        "data_uri": loop_config["data_uri"],
        "code_version": loop_config["code_version"],
        "platform": platform_record(),
        "mlflow_run_id": run_id,
    }
    with tempfile.TemporaryDirectory() as directory:
        save_checkpoint(directory, state, core.backbone)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def _epoch_line(metrics: dict[str, Any]) -> str:
    accuracies = {k[:-4]: v for k, v in metrics.items() if k.endswith("/acc")}
    text = (f"epoch {metrics['epoch']}: loss {metrics['loss']:.3f}, lr {metrics['lr']:.4g}, "
            f"{metrics['images_per_s']:.0f} img/s")
    if accuracies:
        text += ", " + ", ".join(f"{k} {v:.1f}%" for k, v in accuracies.items())
    if VALIDATION_AVERAGE in metrics:
        text += f", validation AVG {metrics[VALIDATION_AVERAGE]:.2f}%"
    if "avg_acc" in metrics:
        text += f", test AVG {metrics['avg_acc']:.2f}%"
    return text


@dataclass
class ParentRun:
    """Where a recognizer run sits in a larger experiment (a sweep trial): the MLflow parent
    run, and tags and params its own run carries besides the recognizer config."""

    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecognizerRun:
    """The outcome of a training run: final metrics and where the final checkpoint lives."""

    run_name: str
    checkpoint: str
    metrics: dict[str, Any]


RUN_IDENTITY_FILE = "run.json"


def _claim_run(run_root: str, cfg: RecognizerConfig, data_uri: str) -> None:
    """Record what this run trains; refuse to resume a run that trained something else.

    A rerun with the same ``run_name`` resumes from the latest checkpoint, which is only sound
    for the same model and data. Epochs, schedule and workers may change between reruns.
    """
    identity = {"backbone": cfg.backbone.model_dump(mode="json"),
                "head": cfg.head.model_dump(mode="json"), "data": data_uri,
                "real_data": cfg.domain_mixup.real_data}
    if cfg.extra_data:
        identity["extra_data"] = cfg.extra_data
    if cfg.select != ShardSelectionConfig():
        identity["select"] = cfg.select.model_dump(mode="json")
    uri = storage.join(run_root, RUN_IDENTITY_FILE)
    if storage.exists(uri):
        previous = storage.read_json_object(uri)
        changed = sorted(key for key in set(identity) | set(previous)
                         if previous.get(key) != identity.get(key))
        if changed:
            raise UserError(
                f"{run_root}: run {cfg.run_name!r} was started with a different "
                f"{', '.join(changed)}; set a new recognizer.run_name or remove that folder")
        return
    storage.write_text(uri, json.dumps(identity, indent=2))



def train_recognizer(config: FactoryConfig, cli_address: str | None = None,
                     parent: ParentRun | None = None,
                     callbacks: Sequence[Any] = ()) -> RecognizerRun:
    """Train (or resume) the configured recognizer with Ray Train; returns its final checkpoint.
    The run folder's lock (:mod:`factory.locking`) is held throughout: a second run of the same
    ``run_name`` and storage is refused at once.

    ``parent`` nests the MLflow run; ``callbacks`` are Ray Train callbacks (a sweep passes
    Tune's reporter, so every epoch's metrics reach the Tune scheduler)."""
    cfg = config.recognizer
    data_uri = layout.recognizer_data_uri(config)
    # Fail fast, on the driver, in one line.
    open_training_data(layout.recognizer_data_uris(config), cfg.precheck_images,
                       **cfg.select.as_kwargs())
    if cfg.domain_mixup.real_data:
        open_checked(cfg.domain_mixup.real_data, cfg.precheck_images)
    build_backbone(**cfg.backbone.model_dump())  # validates the backbone choice
    with training_run(config, "recognizer", layout.recognizer_storage_uri(config),
                      cli_address) as run:  # the lock is held before run.json is read
        _claim_run(run.root, cfg, data_uri)
        result = run.fit(train_loop, {
            "data_uri": data_uri,
            "benchmarks": evaluation_benchmarks(config),
            "validation_benchmarks": validation_benchmarks(config),
            "parent": parent or ParentRun(),
        }, callbacks=callbacks)
        final = layout.recognizer_final_uri(config)
        _publish_final(result.checkpoint.path, result.checkpoint.filesystem, final, result.metrics)
        return RecognizerRun(cfg.run_name, final, dict(result.metrics))


def _publish_final(source_path: str, source_fs, final_uri: str, metrics: dict) -> None:
    """Copy the latest checkpoint to ``<run>/final`` (a stable name) with its metrics."""
    for name in (STATE_FILE, "backbone.pt", "config.yaml"):
        with source_fs.open_input_stream(f"{source_path}/{name}") as src:
            data = src.read()
        storage.write_bytes(storage.join(final_uri, name), data)
    storage.write_text(storage.join(final_uri, "metrics.json"), json.dumps(metrics, indent=2))
