"""The E_id a generator checkpoint carries, and the checkpoint's metadata, readable without
diffusers.

A generator checkpoint (:mod:`factory.checkpoints.generator`) stores its frozen identity
encoder as ``identity_encoder.pt`` (backbone constructor arguments, weights, input size, the
URI it came from) and its metadata as ``generator.json``. Embedding inquiries, measuring a
dataset's similarities and estimating the inquiry filter's threshold need only these two, so
they live here, away from the UNet's loader: a process that imports this module pays for torch
and the backbone, not for diffusers (about 2 s less per Ray worker that starts).
"""

from __future__ import annotations

from typing import Any

from factory import storage
from factory.checkpoints.recognizer import backbone_from_record, read_torch_file
from factory.errors import FormatError
from factory.models.identity import IdentityEncoder
from factory.models.iresnet import IResNet

ENCODER_FILE, META_FILE = "identity_encoder.pt", "generator.json"


def encoder_record(uri: str, backbone: IResNet, input_size: int) -> dict[str, Any]:
    """What a checkpoint stores of E_id: enough to rebuild it, and where it came from."""
    return {"source": uri, "backbone_args": dict(backbone.config),
            "backbone": backbone.state_dict(), "input_size": input_size}


def load_encoder(record: dict[str, Any], source: str) -> IdentityEncoder:
    """E_id from its record (:func:`encoder_record`); FormatError naming ``source`` if the
    record is not one."""
    backbone = backbone_from_record(record, source)
    input_size = record.get("input_size")
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise FormatError(f"{source}: expected the encoder's input_size (a positive integer), "
                          f"found {str(input_size)[:40]}")
    return IdentityEncoder(backbone, input_size)


def read_encoder_record(uri: str) -> dict[str, Any]:
    """The E_id record stored in a generator checkpoint (to condition a continued run on it),
    checked by rebuilding the encoder once."""
    record_uri = storage.join(uri, ENCODER_FILE)
    record = read_torch_file(record_uri)
    load_encoder(record, record_uri)
    return record


def load_checkpoint_encoder(uri: str) -> IdentityEncoder:
    """Only the E_id of the generator checkpoint at ``uri`` (what embedding inquiries needs)."""
    record_uri = storage.join(uri, ENCODER_FILE)
    return load_encoder(read_torch_file(record_uri), record_uri).eval()


def checkpoint_meta(uri: str) -> dict[str, Any]:
    """The ``generator.json`` of the checkpoint at ``uri``; FormatError when there is none."""
    if not storage.exists(storage.join(uri, META_FILE)):
        raise FormatError(f"{uri}: not a generator checkpoint (no {META_FILE})")
    return read_meta(storage.join(uri, META_FILE))


def read_meta(uri: str) -> dict[str, Any]:
    """A checkpoint's ``generator.json``: a JSON object with at least the positive integer
    ``image_size`` samplers need."""
    meta = storage.read_json_object(uri)
    size = meta.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise FormatError(f"{uri}: expected image_size, a positive integer, found "
                          f"{str(size)[:40]}")
    return meta
