"""Recognizer checkpoints: everything needed to resume training, or to rebuild the model alone.

A checkpoint directory holds

* ``recognizer.pt``: backbone and head weights, optimizer, scheduler and AMP scaler state, epoch,
  global step, the backbone's constructor arguments, the resolved config, the code version and
  the MLflow run id;
* ``backbone.pt``: the plain backbone ``state_dict``, the file layout of an arcface_torch
  ``model.pt``, so insightface tooling reads it as it is;
* ``config.yaml``: the resolved config, code version and platform, for people.

Besides these, :func:`load_backbone` reads two foreign formats as frozen backbones (E_id, judge,
evaluation): arcface_torch's ``model.pt`` (a plain state_dict whose architecture the config
names) and an AdaFace release (``*.ckpt``, recognised by its key names, architecture read from
them; see :mod:`factory.models.adaface`).

``publish_backbone`` writes the slim form of a finished checkpoint for shipping (the face
world's judge in ``assets/``): ``recognizer.pt`` with the backbone, its constructor arguments,
config and code version only, which is all that rebuilding the model needs.

Loading uses ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain values, and
never runs code from the file.
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch
import yaml

from factory import storage
from factory.config import BackboneConfig, JudgeConfig
from factory.errors import FormatError, UserError
from factory.models.adaface import AdaFaceIR, adaface_depth, adaface_weights, is_adaface
from factory.models.adaface import FAMILY as ADAFACE
from factory.models.identity import IdentityEncoder
from factory.models.iresnet import IResNet, build_backbone

Backbone = IResNet | AdaFaceIR
"""A recognizer backbone: images in [-1, 1] RGB -> raw embeddings, ``config`` its arguments."""

STATE_FILE = "recognizer.pt"
BACKBONE_FILE = "backbone.pt"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
PUBLISHED_KEYS = ("backbone", "backbone_args", "config", "code_version", "epoch")


def save_checkpoint(directory: str, state: dict[str, Any], backbone: torch.nn.Module) -> None:
    """Write a checkpoint into a local directory (Ray Train uploads it to the run's storage)."""
    os.makedirs(directory, exist_ok=True)
    torch.save(state, os.path.join(directory, STATE_FILE))
    torch.save(backbone.state_dict(), os.path.join(directory, BACKBONE_FILE))
    document = {"code_version": state["code_version"], "platform": state.get("platform"),
                "config": state["config"]}
    with open(os.path.join(directory, CONFIG_FILE), "w") as stream:
        yaml.safe_dump(document, stream, sort_keys=False)


def read_torch_file(uri: str, mmap: bool = False) -> Any:
    """A torch file of tensors and plain values (``weights_only``: never runs code).

    ``mmap`` (local files only) maps the tensors instead of reading them, for a caller that
    looks at names and shapes without touching the values.
    """
    try:
        if mmap:
            return torch.load(storage.local_path(uri), map_location="cpu", weights_only=True,
                              mmap=True)
        return torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise FormatError(f"{uri}: not a readable torch checkpoint ({str(exc).splitlines()[0]})") from None


def load_state(checkpoint_uri: str) -> dict[str, Any]:
    """The full training state of a checkpoint directory."""
    return read_torch_file(storage.join(checkpoint_uri, STATE_FILE))


def load_backbone(uri: str, backbone: BackboneConfig | None = None) -> Backbone:
    """A backbone in eval mode from a facefactory checkpoint directory, an AdaFace release or
    a plain ``model.pt``.

    A facefactory checkpoint carries its own constructor arguments; an AdaFace file is told by
    its key names and its depth read from them (``backbone`` is not consulted). A plain
    state_dict (an arcface_torch ``model.pt``) needs ``backbone`` to say which architecture
    it is.
    """
    if storage.is_dir(uri):
        state_uri = storage.join(uri, STATE_FILE)
        return backbone_from_record(read_torch_file(state_uri), state_uri)
    weights = read_torch_file(uri)
    if is_adaface(weights):
        state = adaface_weights(weights)
        model: Backbone = AdaFaceIR(adaface_depth(state, uri))
        _load_weights(model, state, uri)
        return model.eval()
    if backbone is None:
        raise UserError(f"{uri}: a plain state_dict needs its architecture (evaluate.backbone or "
                        "generator.identity_encoder_backbone: name, input_size)")
    model = build_backbone(**backbone.model_dump())
    _load_weights(model, weights, uri)
    return model.eval()


def backbone_from_args(args: dict[str, Any]) -> Backbone:
    """Rebuild a backbone from its ``config`` (an IResNet unless ``family`` says AdaFace)."""
    if args.get("family") == ADAFACE:
        return AdaFaceIR(args.get("num_layers", 0))
    return IResNet(**args)


def backbone_from_record(record: Any, uri: str) -> Backbone:
    """The backbone a checkpoint record describes, in eval mode: its constructor arguments
    (``backbone_args``) and weights (``backbone``). FormatError naming ``uri`` when the record
    does not describe one, since such records come from files anyone may have written."""
    if not isinstance(record, dict) or not isinstance(record.get("backbone_args"), dict):
        raise FormatError(f"{uri}: expected a facefactory checkpoint with backbone_args (the "
                          "backbone's constructor arguments); found none")
    try:
        model = backbone_from_args(record["backbone_args"])
    except (TypeError, ValueError, UserError) as exc:
        raise FormatError(f"{uri}: backbone_args do not describe a backbone ({exc})") from None
    _load_weights(model, record.get("backbone"), uri)
    return model.eval()


def _load_weights(model: Backbone, weights: Any, uri: str) -> None:
    """Load a state_dict exactly (every key, every shape); FormatError naming ``uri`` if not."""
    if not isinstance(weights, dict):
        raise FormatError(f"{uri}: expected a state_dict (a mapping of tensors)")
    try:
        model.load_state_dict(weights, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise FormatError(f"{uri}: weights do not fit the backbone ({reason})") from None


def load_identity_encoder(uri: str, backbone: BackboneConfig | None = None) -> IdentityEncoder:
    """A recognizer checkpoint as a frozen encoder of images in [-1, 1] (E_id, the judge)."""
    model = load_backbone(uri, backbone)
    return IdentityEncoder(model, int(model.config["input_size"]))


def load_judge(judge: JudgeConfig) -> IdentityEncoder | None:
    """The configured independent judge (``judge.checkpoint``), or None when there is none."""
    return load_identity_encoder(judge.checkpoint, judge.backbone) if judge.checkpoint else None


def publish_backbone(source_uri: str, target_uri: str) -> list[str]:
    """Copy a recognizer checkpoint's backbone, config and metrics to ``target_uri`` without the
    head, optimizer and scheduler state; returns the files written."""
    state = load_state(source_uri)
    missing = [key for key in PUBLISHED_KEYS if key not in state]
    if missing:
        raise FormatError(f"{source_uri}: not a facefactory recognizer checkpoint (no "
                          f"{', '.join(missing)})")
    buffer = io.BytesIO()
    torch.save({key: state[key] for key in (*PUBLISHED_KEYS, "platform") if key in state}, buffer)
    written = {STATE_FILE: buffer.getvalue(), CONFIG_FILE: yaml.safe_dump(
        {"code_version": state["code_version"], "platform": state.get("platform"),
         "config": state["config"]}, sort_keys=False).encode()}
    if storage.exists(storage.join(source_uri, METRICS_FILE)):
        written[METRICS_FILE] = storage.read_bytes(storage.join(source_uri, METRICS_FILE))
    for name, data in written.items():
        storage.write_bytes(storage.join(target_uri, name), data)
    return sorted(written)
