"""The generator's pieces in plain torch: conditions, objective, DDIM sampling, checkpoints."""

import pytest
import torch

from factory.config import GeneratorConfig, UNetConfig, load_config
from factory.config.generator import SimilarityMatchingConfig
from factory.errors import ConfigError
from factory.models.diffusion import (
    cemiface_loss,
    draw_m,
    estimate_x0,
    m_grid,
    similarity_matching,
    training_scheduler,
)
from factory.models.identity import IdentityEncoder
from factory.models.iresnet import build_backbone
from factory.models.sampling import sample_images
from factory.train.generator import build_generator
from factory.checkpoints.encoder import encoder_record
from factory.checkpoints.generator import load_generator, save_generator
from helpers import REPO

TINY_UNET = UNetConfig(block_out_channels=[16, 32], cross_attention=[False, True],
                       norm_num_groups=8, cross_attention_dim=32, attention_head_dim=8)


def tiny_config(**overrides) -> GeneratorConfig:
    return GeneratorConfig(image_size=32, unet=TINY_UNET, **overrides)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    backbone = build_backbone("ir-tiny", 32, 64)
    encoder = IdentityEncoder(backbone, 32)
    generator = build_generator(tiny_config(), 64).eval()
    scheduler = training_scheduler(tiny_config().diffusion)
    return backbone, encoder, generator, scheduler


def test_m_grid_follows_the_interval_and_reaches_both_ends():
    grid = m_grid(GeneratorConfig().similarity_matching)
    assert len(grid) == 51  # CemiFace: step 0.04 over [-1, 1]
    assert grid[0] == pytest.approx(-1.0) and grid[-1] == pytest.approx(1.0)
    assert torch.allclose(grid[1:] - grid[:-1], torch.full((50,), 0.04), atol=1e-6)
    draws = draw_m(grid, 1000, torch.Generator().manual_seed(0))
    assert set(draws.tolist()) <= set(grid.tolist())
    assert len(set(draws.tolist())) > 40  # every part of the grid gets used


def test_similarity_matching_hand_computed():
    s = torch.tensor([0.5, 0.5, 1.0])
    m = torch.tensor([0.0, 0.0, -1.0])
    t = torch.tensor([0, 500, 1000])
    # t = 0: only (1 - s)^2; t = T/2: half each; t = T: only (m - s)^2.
    expected = torch.tensor([0.25, 0.5 * 0.25 + 0.5 * 0.25, 4.0])
    assert torch.allclose(similarity_matching(s, m, t, 1000), expected)
    # constant: (m - s)^2 at every t; ramp: (t/T)(m - s)^2, nothing at t = 0.
    assert torch.allclose(similarity_matching(s, m, t, 1000, "constant"),
                          torch.tensor([0.25, 0.25, 4.0]))
    assert torch.allclose(similarity_matching(s, m, t, 1000, "ramp"),
                          torch.tensor([0.0, 0.125, 4.0]))
    # a ramp at full weight from t/T = 0.5: t = 250 weighs half, t = T/2 already all of it.
    t = torch.tensor([0, 250, 500])
    assert torch.allclose(similarity_matching(s, m, t, 1000, "ramp", ramp_full_at=0.5),
                          torch.tensor([0.0, 0.125, 4.0]))


def test_ramp_full_at_belongs_to_the_ramp():
    with pytest.raises(ValueError, match="ramp_full_at applies to target_schedule 'ramp' only"):
        SimilarityMatchingConfig(target_schedule="constant", ramp_full_at=0.5)
    assert SimilarityMatchingConfig(target_schedule="ramp", ramp_full_at=0.5).ramp_full_at == 0.5


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_x0_estimate_inverts_the_forward_process(prediction):
    cfg = GeneratorConfig().diffusion.model_copy(update={"prediction_type": prediction})
    scheduler = training_scheduler(cfg)
    clean = torch.rand(4, 3, 8, 8) * 1.6 - 0.8
    noise = torch.randn_like(clean)
    t = torch.tensor([1, 250, 600, 999])
    noisy = scheduler.add_noise(clean, noise, t)
    output = noise if prediction == "epsilon" else scheduler.get_velocity(clean, noise, t)
    assert torch.allclose(estimate_x0(scheduler, noisy, t, output), clean, atol=1e-3)


def test_condition_tokens_depend_on_identity_and_m(parts):
    _, _, generator, _ = parts
    identity = torch.randn(2, 64)
    base = generator.condition(identity, torch.tensor([0.5, 0.5]))
    assert base.shape == (2, generator.condition.config.tokens, 32)
    assert not torch.allclose(base, generator.condition(identity, torch.tensor([-0.5, -0.5])))
    assert not torch.allclose(base[0], base[1])


def test_loss_trains_the_generator_and_leaves_the_encoder_frozen(parts):
    backbone, encoder, _, scheduler = parts
    generator = build_generator(tiny_config(), 64)
    clean = torch.rand(4, 3, 32, 32) * 2 - 1
    identity = encoder(clean).detach()
    terms = cemiface_loss(generator, encoder, scheduler, clean, identity,
                          torch.tensor([1.0, 0.5, 0.0, -1.0]), torch.randn_like(clean),
                          torch.tensor([10, 300, 600, 900]), weight=0.05, min_snr_gamma=5.0)
    terms.total.backward()
    assert all(torch.isfinite(v) for v in (terms.total, terms.mse, terms.simmat))
    assert generator.condition.similarity_projection.weight.grad.abs().sum() > 0
    assert generator.unet.conv_in.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())
    encoder.train()
    assert not encoder.backbone.training  # E_id's BatchNorm never switches to training mode


def test_sample_images_is_seeded_per_sample(parts):
    _, encoder, generator, scheduler = parts
    identity = encoder(torch.rand(3, 3, 32, 32) * 2 - 1)
    m = torch.tensor([1.0, 0.0, -1.0])
    batch = sample_images(generator, scheduler, identity, m, [5, 6, 7], 32, steps=4)
    alone = sample_images(generator, scheduler, identity[1:2], m[1:2], [6], 32, steps=4)
    assert batch.shape == (3, 3, 32, 32) and batch.abs().max() <= 1.0
    # The same (identity, m, seed) in a different batch: the same image, up to float rounding.
    assert torch.allclose(batch[1:2], alone, atol=1e-4)
    other_seed = sample_images(generator, scheduler, identity[1:2], m[1:2], [8], 32, steps=4)
    assert not torch.allclose(alone, other_seed, atol=1e-2)


class RecordingGenerator(torch.nn.Module):
    """Wraps a generator and records the (t, identity, m) of every call."""

    def __init__(self, generator):
        super().__init__()
        self.generator, self.calls = generator, []

    def forward(self, noisy, timesteps, identity, m):
        self.calls.append((int(timesteps[0]), identity.clone(), m.clone()))
        return self.generator(noisy, timesteps, identity, m)


def test_identity_handoff_conditions_the_late_steps_on_the_samples_own_identity(parts):
    _, encoder, generator, scheduler = parts
    identity = encoder(torch.rand(2, 3, 32, 32) * 2 - 1)
    m = torch.tensor([0.0, -0.5])
    recording = RecordingGenerator(generator)
    sample_images(recording, scheduler, identity, m, [3, 4], 32, steps=10, handoff=0.75,
                encoder=encoder)
    early = [call for call in recording.calls if call[0] >= 750]
    late = [call for call in recording.calls if call[0] < 750]
    assert [c[0] for c in early] == [900, 800] and len(late) == 8
    for _, seen, seen_m in early:  # above h T: the inquiry at the requested m
        assert torch.equal(seen, identity) and torch.equal(seen_m, m)
    handed = late[0][1]
    for _, seen, seen_m in late:  # below: one embedding of the sample itself, at m = 1
        assert torch.equal(seen, handed) and torch.equal(seen_m, torch.ones(2))
    assert torch.allclose(handed.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(handed, identity, atol=1e-3)
    # Still seeded per sample: a row alone gives the row of the batch.
    batch = sample_images(generator, scheduler, identity, m, [3, 4], 32, steps=10, handoff=0.75,
                        encoder=encoder)
    alone = sample_images(generator, scheduler, identity[1:], m[1:], [4], 32, steps=10,
                        handoff=0.75, encoder=encoder)
    assert torch.allclose(batch[1:], alone, atol=1e-3)  # float rounding through E_id
    plain = sample_images(generator, scheduler, identity, m, [3, 4], 32, steps=10)
    assert not torch.allclose(batch, plain, atol=1e-4)


def test_identity_handoff_needs_the_encoder(parts):
    _, encoder, generator, scheduler = parts
    identity = encoder(torch.rand(1, 3, 32, 32) * 2 - 1)
    with pytest.raises(ValueError, match="identity encoder"):
        sample_images(generator, scheduler, identity, torch.zeros(1), [1], 32, steps=2,
                    handoff=0.5)


def test_checkpoint_reloads_to_identical_samples(parts, tmp_path):
    backbone, encoder, generator, scheduler = parts
    record = encoder_record("memory://encoder", backbone, 32)
    save_generator(str(tmp_path), generator, scheduler, record,
                   {"step": 3, "image_size": 32, "code_version": "test"}, {"generator": {}})
    loaded = load_generator(str(tmp_path))
    identity = encoder(torch.rand(2, 3, 32, 32) * 2 - 1)
    m = torch.tensor([0.8, -0.4])
    before = sample_images(generator, scheduler, identity, m, [1, 2], 32, steps=3)
    after = sample_images(loaded.model, loaded.scheduler, identity, m, [1, 2], 32, steps=3)
    assert torch.equal(before, after)
    probe = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.encoder(probe), encoder(probe))
    assert loaded.meta["step"] == 3


def test_unet_levels_are_validated():
    with pytest.raises(ConfigError, match="cross_attention"):
        load_config(None, ["generator.unet.cross_attention=[true]"])
    with pytest.raises(ConfigError, match="multiple of 4"):
        load_config(None, ["generator.image_size=34"])


def test_a_generator_checkpoint_as_identity_encoder_lends_its_own_e_id():
    """A control (the lambda = 0 generator) trains against the very E_id of the generator it
    controls: naming that generator as generator.identity_encoder takes its encoder record."""
    from factory.config import load_config
    from factory.train.generator import _encoder_state
    from factory.checkpoints.encoder import read_encoder_record

    shipped = str(REPO / "assets" / "faceworld-generator")
    record = _encoder_state(load_config(None, [f"generator.identity_encoder={shipped}"]))
    expected = read_encoder_record(shipped)
    assert record["backbone_args"] == expected["backbone_args"]
    assert all(torch.equal(record["backbone"][k], v) for k, v in expected["backbone"].items())
