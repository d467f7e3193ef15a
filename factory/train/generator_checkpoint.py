"""Generator checkpoints: diffusers layout for the weights, plus everything to resume or rebuild.

A checkpoint directory holds

* ``unet/``, ``condition/``: the EMA weights, written with diffusers ``save_pretrained`` (config
  JSON + safetensors), so ``from_pretrained`` rebuilds each part with no other information;
* ``scheduler/``: the training ``DDPMScheduler`` config (samplers are built from it);
* ``identity_encoder.pt``: the frozen E_id the model is conditioned on (backbone constructor
  arguments, weights, input size and the URI it came from), so the checkpoint alone can sample
  and measure similarity;
* ``generator.json``: step, image size, code version, the E_id source, the loss history; and
  ``config.yaml``, the resolved config, for people;
* ``training_state.pt`` (not in a published ``final/``): raw weights, EMA, optimizer, LR
  schedule and grad-scaler state, to resume exactly.

Everything is loaded with ``weights_only=True`` or from safetensors: loading never runs code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
import yaml
from diffusers import DDPMScheduler, UNet2DConditionModel

from factory import storage
from factory.errors import FormatError
from factory.models.generator import CemiFaceGenerator, SimilarityCondition
from factory.models.identity import IdentityEncoder
from factory.models.iresnet import IResNet
from factory.train.checkpoint import read_torch_file

UNET_DIR, CONDITION_DIR, SCHEDULER_DIR = "unet", "condition", "scheduler"
ENCODER_FILE, META_FILE, STATE_FILE, CONFIG_FILE = (
    "identity_encoder.pt", "generator.json", "training_state.pt", "config.yaml")
PUBLISHED = (META_FILE, CONFIG_FILE, ENCODER_FILE)


def encoder_record(uri: str, backbone: IResNet, input_size: int) -> dict[str, Any]:
    """What a checkpoint stores of E_id: enough to rebuild it, and where it came from."""
    return {"source": uri, "backbone_args": dict(backbone.config),
            "backbone": backbone.state_dict(), "input_size": input_size}


def save_generator(directory: str, ema_model: CemiFaceGenerator, scheduler: DDPMScheduler,
                   encoder: dict[str, Any], meta: dict[str, Any], config: dict[str, Any],
                   training_state: dict[str, Any] | None = None) -> None:
    """Write a checkpoint into a local directory (Ray Train uploads it to the run's storage)."""
    os.makedirs(directory, exist_ok=True)
    ema_model.unet.save_pretrained(os.path.join(directory, UNET_DIR))
    ema_model.condition.save_pretrained(os.path.join(directory, CONDITION_DIR))
    scheduler.save_pretrained(os.path.join(directory, SCHEDULER_DIR))
    torch.save(encoder, os.path.join(directory, ENCODER_FILE))
    with open(os.path.join(directory, META_FILE), "w") as stream:
        json.dump(meta, stream, indent=2)
    with open(os.path.join(directory, CONFIG_FILE), "w") as stream:
        yaml.safe_dump({"code_version": meta.get("code_version"), "config": config}, stream,
                       sort_keys=False)
    if training_state is not None:
        torch.save(training_state, os.path.join(directory, STATE_FILE))


@dataclass
class LoadedGenerator:
    """A checkpoint rebuilt for sampling: EMA model, training schedule, E_id, metadata."""

    uri: str
    model: CemiFaceGenerator
    scheduler: DDPMScheduler
    encoder: IdentityEncoder
    meta: dict[str, Any]

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    def to(self, device: torch.device | str) -> LoadedGenerator:
        self.model.to(device)
        self.encoder.to(device)
        return self


def _local_copy(uri: str, scratch: str) -> str:
    """A local directory with the checkpoint's files (remote URIs are downloaded)."""
    if not storage.is_remote(uri):
        return storage.resolve(uri)[1]
    storage.copy_tree(uri, scratch)
    return scratch


def read_encoder_record(uri: str) -> dict[str, Any]:
    """The E_id record stored in a generator checkpoint (to condition a continued run on it)."""
    return read_torch_file(storage.join(uri, ENCODER_FILE))


def load_encoder(record: dict[str, Any]) -> IdentityEncoder:
    backbone = IResNet(**record["backbone_args"])
    backbone.load_state_dict(record["backbone"], strict=True)
    return IdentityEncoder(backbone, int(record["input_size"]))


def load_generator(uri: str) -> LoadedGenerator:
    """Rebuild a generator checkpoint (a run's checkpoint or a published ``final/``)."""
    if not storage.exists(storage.join(uri, META_FILE)):
        raise FormatError(f"{uri}: not a generator checkpoint (no {META_FILE})")
    scratch = tempfile.mkdtemp(prefix="generator-")
    try:
        local = _local_copy(uri, scratch)
        try:
            unet = UNet2DConditionModel.from_pretrained(os.path.join(local, UNET_DIR))
            condition = SimilarityCondition.from_pretrained(os.path.join(local, CONDITION_DIR))
            scheduler = DDPMScheduler.from_pretrained(os.path.join(local, SCHEDULER_DIR))
        except (OSError, ValueError) as exc:
            raise FormatError(f"{uri}: incomplete generator checkpoint ({exc})") from None
        encoder = load_encoder(read_torch_file(os.path.join(local, ENCODER_FILE)))
        with open(os.path.join(local, META_FILE)) as stream:
            meta = json.load(stream)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model = CemiFaceGenerator(unet, condition).eval()
    return LoadedGenerator(uri, model, scheduler, encoder.eval(), meta)


def load_training_state(local_dir: str) -> dict[str, Any] | None:
    path = os.path.join(local_dir, STATE_FILE)
    return read_torch_file(path) if os.path.exists(path) else None
