"""Ray Train generator training with 2 CPU workers (gloo): finite loss terms, a checkpoint that
reloads to the same samples the training run drew, resume, and the report.

The identity encoder is a randomly initialised ir-tiny saved in the recognizer checkpoint
layout: what matters here is the plumbing, not what the encoder knows.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from factory.config import FactoryConfig, load_config
from factory.eval.generator_report import generator_report
from factory.eval.progress import generator_progress
from factory.models.iresnet import build_backbone
from factory.models.sampling import sample_images
from factory.checkpoints.recognizer import save_checkpoint
from factory.train.generator import train_generator
from factory.checkpoints.generator import load_generator
from helpers import REPO


def _random_encoder(directory, seed: int):
    """A randomly initialised ir-tiny in the recognizer checkpoint layout."""
    torch.manual_seed(seed)
    backbone = build_backbone("ir-tiny", 32, 16)
    state = {"backbone": backbone.state_dict(), "backbone_args": dict(backbone.config),
             "code_version": "test", "config": {}}
    save_checkpoint(str(directory), state, backbone)
    return directory


@pytest.fixture(scope="module")
def encoder_checkpoint(tmp_path_factory):
    return _random_encoder(tmp_path_factory.mktemp("encoder"), seed=0)


def _config(world, encoder, tmp_path, **overrides) -> FactoryConfig:
    base = [
        f"workdir={world}",
        f"generator.identity_encoder={encoder}",
        f"generator.storage={tmp_path / 'runs'}",
        f"runtime.mlflow_tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "generator.image_size=32",
        "generator.unet.block_out_channels=[16,32]",
        "generator.unet.cross_attention=[false,true]",
        "generator.unet.norm_num_groups=8",
        "generator.unet.cross_attention_dim=32",
        "generator.optimizer.batch_size=8",
        "generator.optimizer.warmup_steps=1",
        "generator.optimizer.steps=4",
        "generator.checkpoint_every=2",
        "generator.log_every=1",
        "generator.sampling.steps=3",
        "generator.workers.num_workers=2",
        "generator.workers.cpus_per_worker=0.5",
        "generator.max_failures=0",
    ]
    return load_config(None, base + [f"{k}={v}" for k, v in overrides.items()])


def test_two_workers_train_resume_and_reload(ray_two_cpus, world, encoder_checkpoint, tmp_path):
    config = _config(world, encoder_checkpoint, tmp_path)
    run = train_generator(config)
    for key in ("loss", "mse", "simmat", "similarity", "images_per_s"):
        assert math.isfinite(run.metrics[key]), key
    assert run.metrics["step"] == 4

    # The published checkpoint alone regenerates the preview the training run sampled.
    loaded = load_generator(run.checkpoint)
    preview = torch.load(f"{run.checkpoint}/preview.pt", weights_only=True)
    count = len(preview["identity"])
    m = torch.tensor(list(preview["m"]) * count)
    seeds = [preview["seed"] + row for row in range(count) for _ in preview["m"]]
    again = sample_images(loaded.model, loaded.scheduler,
                        preview["identity"].repeat_interleave(len(preview["m"]), 0), m, seeds,
                        32, steps=3)
    assert torch.allclose(again, preview["images"], atol=1e-4)
    meta = json.loads((tmp_path / "runs" / "generator" / "final" / "generator.json").read_text())
    assert meta["step"] == 4 and meta["identity_encoder"] == str(encoder_checkpoint)
    # the EMA's 4th update used diffusers' warm-up decay (1 + 3) / (10 + 3), not the 0.999 set
    assert meta["objective"]["ema_decay_reached"] == pytest.approx(4 / 13)
    assert not (tmp_path / "runs" / "generator" / "final" / "training_state.pt").exists()
    for name in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                 "condition/config.json", "scheduler/scheduler_config.json",
                 "identity_encoder.pt", "config.yaml", "samples.png", "loss_curve.png"):
        assert (tmp_path / "runs" / "generator" / "final" / name).is_file(), name

    # A rerun with more steps resumes at step 4 instead of starting over.
    resumed = train_generator(_config(world, encoder_checkpoint, tmp_path,
                                      **{"generator.optimizer.steps": 6}))
    assert resumed.metrics["step"] == 6
    history = load_generator(resumed.checkpoint).meta["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    # the resumed EMA went on counting its updates: the 6th used (1 + 5) / (10 + 5)
    assert load_generator(resumed.checkpoint).meta["objective"]["ema_decay_reached"] == \
        pytest.approx(6 / 15)

    # The report measures compliance on the held-out inquiry set and draws the figures.
    # It is also a lambda = 0 control here, and a second random encoder plays the judge.
    judge = _random_encoder(tmp_path / "judge", seed=1)
    report_config = _config(world, encoder_checkpoint, tmp_path, **{
        "generator.compliance.identities": 2, "generator.compliance.first_identity": 2,
        "generator.compliance.validation_identities": 2, "generator.compliance.seeds": 1,
        "generator.compliance.grid_identities": 2, "generator.compliance.grid_columns": 3,
        "generator.compliance.lambda0_checkpoint": run.checkpoint,
        "judge.checkpoint": str(judge), "evaluate.out": str(tmp_path / "report")})
    result, out = generator_report(report_config)
    assert len(result.requested) == 2 * 5  # inquiry identities 2 and 3: the report's own
    assert set(result.real) == {"E_id", "judge"}  # the real genuine row, by both recognizers
    assert result.real["judge"].identities == 2 and "pose" in result.real["judge"].kinds
    assert result.headline.recognizer == "judge" and set(result.by) == {"E_id", "judge"}
    assert set(result.controls) == {"shuffled m", "lambda = 0"}
    assert set(result.controls["shuffled m"]) == {"E_id", "judge"}
    assert result.frechet["real_vs_real"] >= 0 and result.frechet["synthetic_vs_real"] >= 0
    steps = report_config.generator.sampling.steps
    assert len(result.trajectory_t) == steps
    assert result.trajectory_t == sorted(result.trajectory_t, reverse=True)
    assert [len(row) for row in result.trajectory] == [steps] * 5
    assert all(-1.0 <= value <= 1.0 for row in result.trajectory for value in row)
    for name in ("compliance.json", "compliance.png", "compliance-e_id.png", "controls.png",
                 "trajectory.png", "cemiface_grid.png", "compliance_curve.json"):
        assert (tmp_path / "report" / name).is_file(), name
    document = json.loads((tmp_path / "report" / "compliance.json").read_text())
    assert document["headline"] == "judge" and document["judge"] == str(judge)
    assert document["inquiry_identities"] == [2, 4]
    assert document["real_reference"]["judge"]["kinds"]["all"]["images"] == 2 * 16
    matched = document["frechet_identity_matched"]  # m = +1 beside real photos of 2 x 1
    assert (matched["m"], matched["identities"], matched["per_identity"]) == (1.0, 2, 1)
    assert document["config"]["generator"]["compliance"]["lambda0_checkpoint"] == run.checkpoint

    # generator-progress measures each kept checkpoint of the run with both samplers.
    rows, _ = generator_progress(report_config)
    steps = sorted({row["step"] for row in rows})
    assert steps == [4, 6]  # the two latest checkpoints are kept by default
    assert {(row["sampler"], row["recognizer"]) for row in rows} == {
        (sampler, recognizer) for sampler in ("CemiFace's sampler", "hand-off 0.75")
        for recognizer in ("E_id", "judge")}
    assert (tmp_path / "report" / "progress.png").is_file()


def test_the_quickstart_config_continues_the_shipped_generator(ray_two_cpus, world, tmp_path):
    """configs/quickstart.yaml's generator section fits assets/faceworld-generator and trains
    (two steps here); the continued run keeps the shipped identity encoder."""
    config = load_config(str(REPO / "configs" / "quickstart.yaml"), [
        f"workdir={world}", f"generator.storage={tmp_path / 'runs'}",
        f"runtime.mlflow_tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "generator.optimizer.steps=2", "generator.optimizer.batch_size=4",
        "generator.optimizer.warmup_steps=1", "generator.checkpoint_every=2",
        "generator.log_every=1", "generator.sampling.steps=2",
        "generator.workers.cpus_per_worker=1"])
    assert config.generator.init_from == str(REPO / "assets" / "faceworld-generator")
    run = train_generator(config)
    assert run.metrics["step"] == 2 and math.isfinite(run.metrics["loss"])
    shipped = load_generator(config.generator.init_from)
    continued = load_generator(run.checkpoint)
    assert continued.meta["identity_encoder"] == shipped.meta["identity_encoder"]
    probe = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(continued.encoder(probe), shipped.encoder(probe))
