"""``factory train-generator``: the CemiFace generator under Ray Train.

Every worker runs :func:`train_loop`: DDP over gloo on CPUs or NCCL on GPUs, the frozen identity
encoder on each worker, AdamW with warm-up and cosine decay, EMA weights, the CemiFace loss
(``factory.models.diffusion``). Rank 0 logs the loss terms to MLflow every ``log_every`` steps
and, every ``checkpoint_every`` steps, writes a checkpoint in diffusers layout
(``factory.checkpoints.generator``) with a preview grid of EMA samples (rows identities,
columns m from 1 to -1) and the loss curve. A rerun with the same ``run_name`` resumes from the
latest checkpoint; ``init_from`` starts a new run from another checkpoint's weights (the
quickstart continues the shipped face-world generator this way).

Mixed precision is torch autocast on GPU (bf16 where supported, else fp16 with a grad scaler),
as in the recognizer loop. accelerate is not used inside the loop: Ray Train already owns the
process group, device placement and DDP wrapping that accelerate would set up again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch

from factory import layout, storage
from factory.config import FactoryConfig, GeneratorConfig
from factory.errors import UserError
from factory.eval.generator_figures import loss_curve_png, similarity_grid_png
from factory.formats.dataset import open_checked, open_dataset
from factory.models.diffusion import (
    cemiface_loss,
    draw_m,
    draw_unconditional,
    m_grid,
    training_scheduler,
)
from factory.models.generator import CemiFaceGenerator, build_condition, build_unet
from factory.models.sampling import guidance_options, sample_images
from factory.provenance import platform_record
from factory.tracking import RunTracker
from factory.checkpoints.recognizer import load_backbone
from factory.checkpoints.encoder import (
    META_FILE,
    encoder_record,
    load_encoder,
    read_encoder_record,
)
from factory.checkpoints.generator import (
    load_generator,
    load_training_state,
    objective_record,
    save_generator,
)
from factory.train.driver import training_run
from factory.train.workers import ProgressLines, autocast_and_scaler, worker_context
from factory.train.samples import DiffusionImages
from factory.train.schedule import ema_weights, warmup_cosine_multiplier

PREVIEW_M = (1.0, 0.5, 0.0, -0.5, -1.0)
PREVIEW_IDENTITIES = 4
PREVIEW_SEED = 1234
PROGRESS_SECONDS = 20.0  # at most one progress line per this many seconds between log lines


def build_generator(cfg: GeneratorConfig, identity_dim: int) -> CemiFaceGenerator:
    unet = build_unet(cfg.unet, cfg.image_size)
    condition = build_condition(cfg.condition, identity_dim, cfg.unet.cross_attention_dim)
    return CemiFaceGenerator(unet, condition)


def _step_generator(cfg: GeneratorConfig, rank: int, step: int) -> torch.Generator:
    """The random stream of one worker's step: resuming at step k redraws exactly what a
    run that never stopped would have drawn there."""
    return torch.Generator().manual_seed((cfg.seed * 1_000_003 + rank) * 1_000_003 + step)


def preview_samples(model: CemiFaceGenerator, scheduler, encoder, identity: torch.Tensor,
                    cfg: GeneratorConfig) -> torch.Tensor:
    """EMA samples for the preview grid: each identity at every m in PREVIEW_M, one noise per
    row. Returns ``[identities * len(PREVIEW_M), 3, S, S]``, row-major."""
    count = len(identity)
    ids = identity.repeat_interleave(len(PREVIEW_M), dim=0)
    m = torch.tensor(PREVIEW_M * count, device=identity.device)
    seeds = [PREVIEW_SEED + row for row in range(count) for _ in PREVIEW_M]
    return sample_images(model, scheduler, ids, m, seeds, cfg.image_size, cfg.sampling.steps,
                         cfg.sampling.eta, cfg.sampling.identity_handoff, encoder,
                         solver=cfg.sampling.solver, **guidance_options(cfg.sampling))


def train_loop(loop_config: dict[str, Any]) -> None:
    """The per-worker training loop (runs inside a Ray Train worker)."""
    import ray.train
    import ray.train.torch

    config = FactoryConfig.model_validate(loop_config["config"])
    cfg = config.generator
    rank, world, device = worker_context(cfg.workers, cfg.seed)

    images = DiffusionImages(open_dataset(loop_config["data_uri"]), cfg.image_size, cfg.seed)
    loader = torch.utils.data.DataLoader(
        images, batch_size=max(1, cfg.optimizer.batch_size // world), shuffle=True,
        drop_last=True, num_workers=cfg.workers.loader_workers,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    loader = ray.train.torch.prepare_data_loader(loader)
    encoder_state = loop_config["encoder"]
    encoder = load_encoder(encoder_state, str(encoder_state["source"])).to(device)
    scheduler = training_scheduler(cfg.diffusion)
    identity_dim = int(encoder_state["backbone_args"]["embedding_size"])
    model = build_generator(cfg, identity_dim)

    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_training_state(directory)
        model.load_state_dict(state["model"])
    elif loop_config["init_from"]:
        load_init_weights(model, load_generator(loop_config["init_from"]).model)
    ema = ema_weights(model.parameters(), cfg.optimizer)
    model = ray.train.torch.prepare_model(model)
    core: CemiFaceGenerator = model.module if hasattr(model, "module") else model
    optimizer = torch.optim.AdamW(core.parameters(), lr=cfg.optimizer.lr,
                                  weight_decay=cfg.optimizer.weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine_multiplier(
        cfg.optimizer.warmup_steps, cfg.optimizer.steps, cfg.optimizer.min_lr_ratio))
    autocast, scaler = autocast_and_scaler(device, cfg.workers.mixed_precision)
    step, history, run_id = 0, [], None
    if state is not None:
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        scaler.load_state_dict(state["scaler"])
        step, history, run_id = state["step"], state["history"], state.get("mlflow_run_id")
    ema.to(device)

    tracker = RunTracker(rank == 0, loop_config["tracking_uri"], config.runtime.experiment,
                         config.runtime.mlflow_artifact_location)
    run_id = tracker.start(
        cfg.run_name, run_id=run_id,
        params={"generator": cfg.model_dump(mode="json"), "data": loop_config["data_uri"],
                "identity_encoder": encoder_state["source"]},
        tags={"code_version": loop_config["code_version"], "stage": "train-generator"},
    )
    grid = m_grid(cfg.similarity_matching)
    with torch.no_grad():
        preview_identity = encoder(torch.stack(
            [images[i] for i in range(min(PREVIEW_IDENTITIES, len(images)))]).to(device))
    progress = ProgressLines("generator", cfg.optimizer.steps, "step", rank == 0,
                             PROGRESS_SECONDS, initial=step)
    window: dict[str, float] = {"loss": 0.0, "mse": 0.0, "simmat": 0.0, "similarity": 0.0}
    window_steps, window_start, epoch = 0, time.perf_counter(), step // max(1, len(loader))
    while step < cfg.optimizer.steps:
        images.set_epoch(epoch)
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for clean in loader:
            if step >= cfg.optimizer.steps:
                break
            clean = clean.to(device)
            draws = _step_generator(cfg, rank, step)
            m = draw_m(grid, len(clean), draws).to(device)
            timesteps = torch.randint(cfg.diffusion.num_train_timesteps, (len(clean),),
                                      generator=draws).to(device)
            noise = torch.randn(clean.shape, generator=draws).to(device)
            unconditional = draw_unconditional(cfg.condition.dropout, len(clean), draws)
            if unconditional is not None:
                unconditional = unconditional.to(device)
            with torch.no_grad():
                identity = encoder(clean)
            model.train()
            with autocast():
                terms = cemiface_loss(model, encoder, scheduler, clean, identity, m, noise,
                                      timesteps, cfg.similarity_matching.weight,
                                      cfg.diffusion.min_snr_gamma,
                                      cfg.similarity_matching.target_schedule, unconditional,
                                      cfg.similarity_matching.ramp_full_at)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(terms.total).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(core.parameters(), cfg.optimizer.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            lr_schedule.step()
            ema.step(core.parameters())
            step += 1
            final = step == cfg.optimizer.steps
            summary_due = step % cfg.log_every == 0 or step % cfg.checkpoint_every == 0 or final
            progress.update(between_lines=not summary_due)
            for key, value in (("loss", terms.total), ("mse", terms.mse),
                               ("simmat", terms.simmat), ("similarity", terms.similarity)):
                window[key] += float(value.detach())
            window_steps += 1
            if summary_due:
                elapsed = time.perf_counter() - window_start
                metrics = {k: v / window_steps for k, v in window.items()}
                metrics.update(step=step, lr=lr_schedule.get_last_lr()[0],
                               images_per_s=window_steps * len(clean) * world / max(elapsed, 1e-9))
                history.append(metrics)
                tracker.log_metrics(metrics, step=step)
                progress.line(_log_line(metrics))
                window = dict.fromkeys(window, 0.0)
                window_steps, window_start = 0, time.perf_counter()
                checkpoint_due = step % cfg.checkpoint_every == 0 or final
                _report(rank, checkpoint_due, metrics, core, ema, optimizer, lr_schedule, scaler,
                        scheduler, encoder, history, run_id, preview_identity, loop_config, tracker)
        epoch += 1
    tracker.end()


def _log_line(metrics: dict[str, Any]) -> str:
    return (f"step {metrics['step']}: loss {metrics['loss']:.4f} (mse {metrics['mse']:.4f}, "
            f"simmat {metrics['simmat']:.4f}), s {metrics['similarity']:.3f}, "
            f"lr {metrics['lr']:.3g}, {metrics['images_per_s']:.1f} img/s")


def _report(rank, checkpoint_due, metrics, core, ema, optimizer, lr_schedule, scaler, scheduler,
            encoder, history, run_id, preview_identity, loop_config, tracker) -> None:
    """Report metrics; when due, rank 0 attaches a checkpoint (the call is a barrier)."""
    import ray.train

    if rank != 0 or not checkpoint_due:
        ray.train.report(metrics)
        return
    config = loop_config["config"]
    cfg = GeneratorConfig.model_validate(config["generator"])
    training_state = {
        "model": core.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
        "lr_schedule": lr_schedule.state_dict(), "scaler": scaler.state_dict(),
        "step": metrics["step"], "history": history, "mlflow_run_id": run_id,
    }
    ema.store(core.parameters())
    ema.copy_to(core.parameters())
    try:
        core.eval()
        preview = preview_samples(core, scheduler, encoder, preview_identity, cfg)
        with tempfile.TemporaryDirectory() as directory:
            meta = {
                "step": metrics["step"], "image_size": cfg.image_size,
                "code_version": loop_config["code_version"], "platform": platform_record(),
                "identity_encoder": loop_config["encoder"]["source"],
                "data": loop_config["data_uri"], "sampling": cfg.sampling.model_dump(),
                "objective": objective_record(cfg, _decay_of_last_update(ema)),
                "history": history,
            }
            save_generator(directory, core, scheduler, loop_config["encoder"], meta, config,
                           training_state)
            torch.save({"identity": preview_identity.cpu(), "m": PREVIEW_M,
                        "seed": PREVIEW_SEED, "images": preview.cpu()},
                       os.path.join(directory, "preview.pt"))
            grid_path = similarity_grid_png(preview, len(PREVIEW_M),
                                            os.path.join(directory, "samples.png"),
                                            column_labels=[f"m={m:g}" for m in PREVIEW_M])
            curve_path = loss_curve_png(history, os.path.join(directory, "loss_curve.png"))
            tracker.log_artifact(grid_path, f"samples/step_{metrics['step']:07d}")
            tracker.log_artifact(curve_path)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
    finally:
        ema.restore(core.parameters())


@dataclass
class GeneratorRun:
    """The outcome of a training run: where its published checkpoint lives, final metrics."""

    run_name: str
    checkpoint: str
    metrics: dict[str, Any]


def _encoder_state(config: FactoryConfig) -> dict[str, Any]:
    """E_id for this run: ``generator.identity_encoder`` if set (a recognizer checkpoint, or a
    generator checkpoint whose E_id is taken, so a control trains against the very encoder of
    the model it controls); else, when starting from another generator, the encoder that
    generator was conditioned on; else this config's recognizer."""
    cfg = config.generator
    if cfg.init_from and not cfg.identity_encoder:
        return read_encoder_record(cfg.init_from)
    uri = layout.identity_encoder_uri(config)
    if storage.exists(storage.join(uri, META_FILE)):
        return read_encoder_record(uri)
    if not storage.exists(uri):
        raise UserError(f"{uri}: identity encoder not found (train the recognizer first, or "
                        "set generator.identity_encoder to a recognizer checkpoint)")
    backbone = load_backbone(uri, cfg.identity_encoder_backbone)
    return encoder_record(uri, backbone, int(backbone.config["input_size"]))


NULL_CONTEXT = "condition.null_context"


def load_init_weights(model: CemiFaceGenerator, source: CemiFaceGenerator) -> None:
    """``source``'s weights into ``model``, which must have exactly its architecture, except
    that a model with condition dropout may start from one without: its null context keeps its
    initial value (zeros) and learns from there."""
    state = source.state_dict()
    if NULL_CONTEXT in model.state_dict() and NULL_CONTEXT not in state:
        state[NULL_CONTEXT] = model.state_dict()[NULL_CONTEXT]
    model.load_state_dict(state, strict=True)


def _check_init_fits(cfg: GeneratorConfig, encoder: dict[str, Any]) -> None:
    """``init_from`` must hold weights of the configured architecture (see
    :func:`load_init_weights`)."""
    source = load_generator(cfg.init_from).model
    model = build_generator(cfg, int(encoder["backbone_args"]["embedding_size"]))
    try:
        load_init_weights(model, source)
    except RuntimeError as exc:
        raise UserError(f"{cfg.init_from}: its weights do not fit generator.unet / "
                        f"generator.condition as configured ({str(exc).splitlines()[1].strip()})"
                        ) from None


def train_generator(config: FactoryConfig, cli_address: str | None = None) -> GeneratorRun:
    """Train (or resume) the configured generator; publishes ``<run>/final`` and returns it.
    The run folder's lock (:mod:`factory.locking`) is held throughout: a second run of the same
    ``run_name`` and storage is refused at once."""
    cfg = config.generator
    data_uri = layout.generator_data_uri(config)
    open_checked(data_uri, cfg.precheck_images)  # fail fast, on the driver, in one line
    encoder = _encoder_state(config)
    if cfg.init_from:
        _check_init_fits(cfg, encoder)  # a one-line error now rather than inside a worker
    with training_run(config, "generator", layout.generator_storage_uri(config),
                      cli_address) as run:  # the lock is held before its checkpoints are read
        result = run.fit(train_loop, {"data_uri": data_uri, "encoder": encoder,
                                      "init_from": cfg.init_from},
                         keep_checkpoints=cfg.keep_checkpoints)
        final = layout.generator_final_uri(config)
        publish_checkpoint(result.checkpoint.path, final, result.checkpoint.filesystem)
        storage.write_text(storage.join(final, "metrics.json"),
                           json.dumps(result.metrics, indent=2))
        return GeneratorRun(cfg.run_name, final, dict(result.metrics))


def publish_checkpoint(source: str, destination: str, source_filesystem=None) -> None:
    """Copy a checkpoint without its training state: what sampling and shipping need."""
    with tempfile.TemporaryDirectory() as scratch:
        storage.copy_tree(source, scratch, source_filesystem)
        state = os.path.join(scratch, "training_state.pt")
        if os.path.exists(state):
            os.remove(state)
        storage.copy_tree(scratch, destination)


def _decay_of_last_update(ema: Any) -> float | None:
    """The decay EMAModel used at its last update; None before the first (a resumed run's
    state does not carry it)."""
    value = getattr(ema, "cur_decay_value", None)
    return None if value is None else float(value)
