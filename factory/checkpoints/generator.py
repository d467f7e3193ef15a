"""Generator checkpoints: diffusers layout for the weights, plus everything to resume or rebuild.

A checkpoint directory holds

* ``unet/``, ``condition/``: the EMA weights, written with diffusers ``save_pretrained`` (config
  JSON + safetensors), so ``from_pretrained`` rebuilds each part with no other information;
* ``scheduler/``: the training ``DDPMScheduler`` config (samplers are built from it);
* ``identity_encoder.pt``: the frozen E_id the model is conditioned on (backbone constructor
  arguments, weights, input size and the URI it came from), so the checkpoint alone can sample
  and measure similarity (read by :mod:`factory.checkpoints.encoder`, which needs no
  diffusers);
* ``generator.json``: step, image size, code version, platform, the E_id source, the training objective
  (:func:`objective_record`), the loss history; and ``config.yaml``, the resolved config, for
  people;
* ``training_state.pt`` (not in a published ``final/``): raw weights, EMA, optimizer, LR
  schedule and grad-scaler state, to resume exactly.

Everything is loaded with ``weights_only=True`` or from safetensors: loading never runs code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import yaml
from diffusers import DDPMScheduler, UNet2DConditionModel
from safetensors import safe_open

from factory import storage
from factory.config import GeneratorConfig
from factory.checkpoints.encoder import (
    ENCODER_FILE,
    META_FILE,
    checkpoint_meta,
    load_encoder,
)
from factory.checkpoints.recognizer import read_torch_file
from factory.errors import FormatError, UserError
from factory.models.generator import CemiFaceGenerator, SimilarityCondition
from factory.models.identity import IdentityEncoder

UNET_DIR, CONDITION_DIR, SCHEDULER_DIR = "unet", "condition", "scheduler"
STATE_FILE, CONFIG_FILE = "training_state.pt", "config.yaml"
PUBLISHED = (META_FILE, CONFIG_FILE, ENCODER_FILE)
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"  # what diffusers' save_pretrained writes


def objective_record(generator: GeneratorConfig,
                     ema_decay_reached: float | None = None) -> dict[str, Any]:
    """What the weights were trained to minimise, from the config section that trained them.

    ``L = L_MSE + lambda L_SimMat`` (CemiFace), with L_SimMat's target schedule (``linear``:
    CemiFace's; ``constant``: target m at every noise level), the Min-SNR weighting, the share of
    samples trained with the null context (what classifier-free guidance at sampling needs) and
    the EMA of the published weights: the configured decay, whether diffusers' warm-up ramped
    it, and ``ema_decay_reached``, the decay of the last update before the checkpoint (below
    the configured one until the warm-up reaches it). Written into ``generator.json`` so a user
    (and the dataset card) can tell two checkpoints' objectives apart without reading the config.
    """
    matching = generator.similarity_matching
    return {
        "loss": "mse + lambda * simmat",
        "lambda": matching.weight,
        "target_schedule": matching.target_schedule,
        "ramp_full_at": matching.ramp_full_at,
        "m_range": [matching.m_low, matching.m_high],
        "min_snr_gamma": generator.diffusion.min_snr_gamma,
        "prediction_type": generator.diffusion.prediction_type,
        "condition_dropout": generator.condition.dropout,
        "ema_decay": generator.optimizer.ema_decay,
        "ema_warmup": generator.optimizer.ema_warmup,
        "ema_decay_reached": ema_decay_reached,
    }


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
        yaml.safe_dump({"code_version": meta.get("code_version"), "platform": meta.get("platform"),
                        "config": config}, stream, sort_keys=False)
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


def check_generator(uri: str) -> dict[str, Any]:
    """Check a checkpoint without loading its weights into memory; returns its metadata.

    For a driver that only plans (synthesis): each diffusers part is built from its config on
    torch's ``meta`` device (no memory), and E_id's record is rebuilt there against the
    stored tensors' names and shapes (a local file is memory-mapped, not read). What this
    cannot see is damage inside the weight files themselves, which the loading actor meets.
    """
    meta = checkpoint_meta(uri)
    for kind, name, config_name in ((UNet2DConditionModel, UNET_DIR, "config.json"),
                                    (SimilarityCondition, CONDITION_DIR, "config.json"),
                                    (DDPMScheduler, SCHEDULER_DIR, "scheduler_config.json")):
        part = storage.join(uri, name)
        try:
            config = json.loads(storage.read_bytes(storage.join(part, config_name)))
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = kind.from_config(config)
            if name != SCHEDULER_DIR and not storage.is_remote(part):
                _check_weight_file(model, storage.join(part, WEIGHTS_FILE))
        except UserError:
            raise
        except json.JSONDecodeError as exc:
            raise FormatError(f"{part}: {config_name} is not a valid JSON file ({exc})") from None
        except Exception as exc:  # a config of the wrong shape fails in many ways
            raise FormatError(f"{part}: missing or damaged part of a generator checkpoint "
                              f"({type(exc).__name__}: {exc})") from None
    record_uri = storage.join(uri, ENCODER_FILE)
    record = read_torch_file(record_uri, mmap=not storage.is_remote(record_uri))
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # loading into meta tensors checks shapes, copies none
        load_encoder(record, record_uri)
    return meta


def _check_weight_file(model: torch.nn.Module, uri: str) -> None:
    """The safetensors file holds exactly ``model``'s tensor names and shapes, and its length
    matches its header (a truncated file fails to open); only the header is read."""
    with safe_open(storage.local_path(uri), framework="pt") as weights:
        found = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    if found != expected:
        differ = sorted(set(found) ^ set(expected)) or sorted(
            key for key in found if found[key] != expected[key])
        raise ValueError(f"{uri}: weights do not fit the config (first: {differ[0]})")


def load_generator(uri: str) -> LoadedGenerator:
    """Rebuild a generator checkpoint (a run's checkpoint or a published ``final/``)."""
    meta = checkpoint_meta(uri)
    scratch = tempfile.mkdtemp(prefix="generator-")
    try:
        local = _local_copy(uri, scratch)
        unet = _pretrained(UNet2DConditionModel, local, UNET_DIR, uri)
        condition = _pretrained(SimilarityCondition, local, CONDITION_DIR, uri)
        scheduler = _pretrained(DDPMScheduler, local, SCHEDULER_DIR, uri)
        encoder_uri = storage.join(uri, ENCODER_FILE)
        encoder = load_encoder(read_torch_file(os.path.join(local, ENCODER_FILE)), encoder_uri)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model = CemiFaceGenerator(unet, condition).eval()
    return LoadedGenerator(uri, model, scheduler, encoder.eval(), meta)


def _pretrained(kind: Any, local: str, name: str, uri: str) -> Any:
    """``kind.from_pretrained`` of the checkpoint's part ``name`` (a diffusers folder); a
    FormatError naming ``uri/name`` when it is missing or damaged."""
    try:
        return kind.from_pretrained(os.path.join(local, name))
    except Exception as exc:  # a damaged config or weights file fails in many ways
        raise FormatError(f"{storage.join(uri, name)}: missing or damaged part of a generator "
                          f"checkpoint ({type(exc).__name__}: {exc})") from None


def load_training_state(local_dir: str) -> dict[str, Any] | None:
    path = os.path.join(local_dir, STATE_FILE)
    return read_torch_file(path) if os.path.exists(path) else None
