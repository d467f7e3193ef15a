"""The IResNet backbone: arcface_torch weight compatibility, presets, shapes, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factory.errors import ConfigError
from factory.models.iresnet import BACKBONE_PRESETS, IResNet, build_backbone, preprocess


def _batchnorm(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (channels,),
        f"{prefix}.bias": (channels,),
        f"{prefix}.running_mean": (channels,),
        f"{prefix}.running_var": (channels,),
        f"{prefix}.num_batches_tracked": (),
    }


def arcface_r50_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of an arcface_torch r50 ``model.pt``, written out from formats.md."""
    shapes = {"conv1.weight": (64, 3, 3, 3), **_batchnorm("bn1", 64), "prelu.weight": (64,)}
    in_planes = 64
    for stage, (blocks, planes) in enumerate(zip((3, 4, 14, 3), (64, 128, 256, 512)), start=1):
        for i in range(blocks):
            block_in = in_planes if i == 0 else planes
            p = f"layer{stage}.{i}"
            shapes.update(_batchnorm(f"{p}.bn1", block_in))
            shapes[f"{p}.conv1.weight"] = (planes, block_in, 3, 3)
            shapes.update(_batchnorm(f"{p}.bn2", planes))
            shapes[f"{p}.prelu.weight"] = (planes,)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes.update(_batchnorm(f"{p}.bn3", planes))
            if i == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes, block_in, 1, 1)
                shapes.update(_batchnorm(f"{p}.downsample.1", planes))
        in_planes = planes
    shapes.update(_batchnorm("bn2", 512))
    shapes["fc.weight"] = (512, 25088)
    shapes["fc.bias"] = (512,)
    shapes.update(_batchnorm("features", 512))
    return shapes


def random_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator)
    return state


def test_arcface_r50_state_dict_loads_strictly() -> None:
    r50 = build_backbone("r50")
    shapes = arcface_r50_shapes()
    assert list(r50.state_dict()) == list(shapes)  # same keys, same order
    state = random_state_dict(shapes)
    r50.load_state_dict(state, strict=True)
    assert torch.equal(r50.fc.weight, state["fc.weight"])
    assert torch.equal(r50.layer3[13].conv2.weight, state["layer3.13.conv2.weight"])
    assert int(r50.features.num_batches_tracked) == 1234


def test_r50_embeds_112px_to_512() -> None:
    with torch.inference_mode():
        out = build_backbone("r50").eval()(torch.zeros(1, 3, 112, 112))
    assert out.shape == (1, 512)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["ir-tiny", "ir-small"])
@pytest.mark.parametrize("size", [32, 64])
def test_small_presets_output_shape(name: str, size: int) -> None:
    model = build_backbone(name, input_size=size, embedding_size=64)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 64)
    last_width = BACKBONE_PRESETS[name][1][-1]
    assert model.fc.in_features == last_width * (size // 16) ** 2


def test_presets_match_the_published_depths() -> None:
    assert BACKBONE_PRESETS["r18"][0] == (2, 2, 2, 2)
    assert BACKBONE_PRESETS["r34"][0] == (3, 4, 6, 3)
    assert BACKBONE_PRESETS["r50"][0] == (3, 4, 14, 3)
    assert BACKBONE_PRESETS["r100"][0] == (3, 13, 30, 3)
    assert BACKBONE_PRESETS["r200"][0] == (6, 26, 60, 6)


def test_features_scale_is_fixed_at_one() -> None:
    model = build_backbone("ir-tiny", input_size=32, embedding_size=16)
    assert not model.features.weight.requires_grad
    assert "features.weight" in model.state_dict()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9, weight_decay=5e-4)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(4, 3, 32, 32)).pow(2).sum().backward()
        optimizer.step()
    assert torch.equal(model.features.weight, torch.ones(16))
    assert model.features.bias.abs().sum() > 0  # the rest of the layer does train


def test_config_rebuilds_the_module() -> None:
    model = build_backbone("ir-small", input_size=48, embedding_size=32, dropout=0.1)
    rebuilt = IResNet(**model.config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.config == model.config
    assert rebuilt.dropout.p == 0.1


@pytest.mark.parametrize("size", [100, 8, 0])
def test_input_size_must_be_a_multiple_of_16(size: int) -> None:
    with pytest.raises(ConfigError, match="backbone.input_size"):
        build_backbone("ir-tiny", input_size=size)


def test_unknown_backbone_names_the_field_and_choices() -> None:
    with pytest.raises(ConfigError, match=r"backbone\.name.*r50.*ir-tiny"):
        build_backbone("resnet50")


def test_preprocess_normalises_uint8_nhwc_rgb() -> None:
    images = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    images[0, 1, 2] = (0, 255, 51)  # one pixel: R 0, G 255, B 51
    batch = preprocess(images)
    assert batch.shape == (2, 3, 4, 5) and batch.dtype == torch.float32
    # (0/255 - .5)/.5 = -1, (255/255 - .5)/.5 = 1, (51/255 - .5)/.5 = (0.2 - 0.5)/0.5 = -0.6
    assert torch.allclose(batch[0, :, 1, 2], torch.tensor([-1.0, 1.0, -0.6]))
    assert torch.equal(preprocess(torch.from_numpy(images)), batch)
    with pytest.raises(ValueError):
        preprocess(np.zeros((4, 5, 3), dtype=np.uint8))
