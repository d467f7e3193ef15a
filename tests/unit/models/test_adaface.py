"""An AdaFace release loads as E_id, judge and evaluation backbone and embeds as AdaFace does.

The reference below is an independent transcription of AdaFace's ``net.py`` (``Backbone`` in
``ir`` mode: block specs, ``BasicBlockIR`` units, ``output_layer``, a forward returning the
normalised embedding and its norm) and of its ``inference.py`` preprocessing (RGB -> BGR,
``(x / 255 - 0.5) / 0.5``). Its random weights, wrapped as a Lightning checkpoint, go through
the project's loaders; the embeddings must agree to 1e-5.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch
from torch import nn

from factory.config import JudgeConfig
from factory.errors import FormatError
from factory.models.adaface import AdaFaceIR, adaface_depth
from factory.models.iresnet import preprocess
from factory.checkpoints.recognizer import load_backbone, load_identity_encoder, load_judge
from factory.checkpoints.encoder import encoder_record, load_encoder

Spec = namedtuple("Spec", ["in_channel", "depth", "stride"])


def _stage(in_channel: int, depth: int, units: int) -> list[Spec]:
    return [Spec(in_channel, depth, 2)] + [Spec(depth, depth, 1)] * (units - 1)


class _Unit(nn.Module):
    def __init__(self, in_channel: int, depth: int, stride: int) -> None:
        super().__init__()
        self.shortcut_layer = (nn.MaxPool2d(1, stride) if in_channel == depth else nn.Sequential(
            nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth)))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel), nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.BatchNorm2d(depth), nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False), nn.BatchNorm2d(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_layer(x) + self.res_layer(x)


class _ReferenceBackbone(nn.Module):
    """AdaFace ``Backbone((112, 112), num_layers, 'ir')``."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        counts = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}[num_layers]
        specs = (_stage(64, 64, counts[0]) + _stage(64, 128, counts[1])
                 + _stage(128, 256, counts[2]) + _stage(256, 512, counts[3]))
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False),
                                         nn.BatchNorm2d(64), nn.PReLU(64))
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(0.4), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512),
                                          nn.BatchNorm1d(512, affine=False))
        self.body = nn.Sequential(*(_Unit(*spec) for spec in specs))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.output_layer(self.body(self.input_layer(x)))
        norm = torch.norm(x, 2, 1, True)
        return torch.div(x, norm), norm


def _reference_input(rgb: np.ndarray) -> torch.Tensor:
    """AdaFace's ``to_input``: BGR, ``(x / 255 - 0.5) / 0.5``, NCHW."""
    bgr = ((rgb[..., ::-1] / 255.0) - 0.5) / 0.5
    return torch.tensor(bgr.transpose(0, 3, 1, 2).copy()).float()


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """Random weights, BatchNorm statistics and PReLU slopes, so every parameter matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.dtype.is_floating_point:
                values = torch.rand(tensor.shape, generator=generator)
                if name.endswith("running_var"):
                    tensor.copy_(0.5 + values)
                elif "weight" in name and tensor.ndim == 1:  # BN scale, PReLU slope
                    tensor.copy_(0.5 + 0.5 * values)
                else:
                    tensor.copy_((values - 0.5) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, _ReferenceBackbone]:
    """A Lightning checkpoint of a random IR-50, laid out as AdaFace's releases are."""
    reference = _randomised(_ReferenceBackbone(50), seed=0)
    state = {f"model.{key}": value for key, value in reference.state_dict().items()}
    state["head.kernel"] = torch.randn(512, 10)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[12, 20, 24])
    path = str(tmp_path_factory.mktemp("adaface") / "adaface_ir50_ms1mv2.ckpt")
    torch.save({"epoch": 25, "global_step": 1000, "pytorch-lightning_version": "1.8.6",
                "state_dict": state, "lr_schedulers": [scheduler.state_dict()],
                "hyper_parameters": {"arch": "ir_50", "head": "adaface", "m": 0.4}}, path)
    return path, reference


def _faces(count: int = 3) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (count, 112, 112, 3), dtype=np.uint8)


def test_e_id_matches_adaface_inference_to_1e5(release: tuple[str, _ReferenceBackbone]) -> None:
    path, reference = release
    faces = _faces()
    with torch.no_grad():
        expected, _ = reference(_reference_input(faces))
        encoder = load_identity_encoder(path)
        got = encoder(preprocess(faces))
    assert isinstance(encoder.backbone, AdaFaceIR) and encoder.input_size == 112
    assert (got - expected).abs().max().item() < 1e-5
    # The channel order matters: RGB fed unflipped to the reference gives other embeddings.
    with torch.no_grad():
        unflipped, _ = reference(preprocess(faces))
    assert (unflipped - expected).abs().max().item() > 1e-3


def test_evaluation_backbone_gives_adaface_raw_embedding(
        release: tuple[str, _ReferenceBackbone]) -> None:
    """evaluate reads raw embeddings (the flip-sum fuses them): AdaFace's direction and norm."""
    path, reference = release
    faces = _faces(2)
    with torch.no_grad():
        expected, norm = reference(_reference_input(faces))
        raw = load_backbone(path)(preprocess(faces))
    got_norm = raw.norm(dim=1, keepdim=True)
    assert (raw / got_norm - expected).abs().max().item() < 1e-5
    assert ((got_norm - norm).abs() / norm).max().item() < 1e-5


def test_judge_and_generator_record_rebuild_adaface(
        release: tuple[str, _ReferenceBackbone]) -> None:
    path, reference = release
    faces = _faces(2)
    judge = load_judge(JudgeConfig(checkpoint=path))
    backbone = load_backbone(path)
    record = encoder_record(path, backbone, 112)
    rebuilt = load_encoder(record, "identity_encoder.pt")
    with torch.no_grad():
        expected, _ = reference(_reference_input(faces))
        for encoder in (judge, rebuilt):
            assert (encoder(preprocess(faces)) - expected).abs().max().item() < 1e-5
    assert record["backbone_args"] == {"family": "adaface", "num_layers": 50,
                                       "input_size": 112, "embedding_size": 512}


def test_bare_state_dict_and_ir101_depth(tmp_path) -> None:
    """A state_dict already taken out of the Lightning file loads too; IR-101 is told by its
    49 units; a body of another size is refused naming the file."""
    ir101 = AdaFaceIR(100).state_dict()
    assert adaface_depth(ir101, "x") == 100
    path = tmp_path / "ir50.pt"
    torch.save(AdaFaceIR(50).state_dict(), path)
    assert load_backbone(str(path)).config["num_layers"] == 50
    truncated = {k: v for k, v in ir101.items() if not k.startswith("body.48.")}
    with pytest.raises(FormatError, match="48 residual units"):
        adaface_depth(truncated, "x")
