"""Identity classifier-free guidance: condition dropout in training, the null context, guided
sampling, and starting a guided generator from a checkpoint trained without it."""

from __future__ import annotations

import pytest
import torch

from factory.config import ConditionConfig
from factory.models.diffusion import cemiface_loss, draw_unconditional, training_scheduler
from factory.models.identity import IdentityEncoder
from factory.models.iresnet import build_backbone
from factory.models.sampling import guided_output, sample_images
from factory.checkpoints.encoder import encoder_record
from factory.train.generator import NULL_CONTEXT, build_generator, load_init_weights
from factory.checkpoints.generator import load_generator, save_generator
from .test_generator_model import tiny_config


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    backbone = build_backbone("ir-tiny", 32, 64)
    encoder = IdentityEncoder(backbone, 32)
    guided = build_generator(tiny_config(condition=ConditionConfig(dropout=0.1)), 64).eval()
    with torch.no_grad():  # a null context that differs from every conditional one
        guided.condition.null_context.normal_()
    scheduler = training_scheduler(tiny_config().diffusion)
    return backbone, encoder, guided, scheduler


def test_only_a_generator_trained_with_dropout_has_a_null_context(parts):
    _, _, guided, _ = parts
    plain = build_generator(tiny_config(), 64)
    assert guided.guidable and not plain.guidable
    assert NULL_CONTEXT in guided.state_dict() and NULL_CONTEXT not in plain.state_dict()
    identity, m = torch.randn(3, 64), torch.tensor([1.0, 0.0, -1.0])
    with pytest.raises(ValueError, match="no null context"):
        plain.condition(identity, m, torch.tensor([True, False, False]))


def test_dropped_rows_see_the_null_context_and_the_rest_their_condition(parts):
    _, _, guided, _ = parts
    identity, m = torch.randn(3, 64), torch.tensor([1.0, 0.0, -1.0])
    dropped = torch.tensor([False, True, False])
    tokens = guided.condition(identity, m, dropped)
    assert torch.equal(tokens[1], guided.condition.null_context)
    assert torch.equal(tokens[[0, 2]], guided.condition(identity, m)[[0, 2]])


def test_dropout_draws_nothing_when_off_and_about_its_share_when_on():
    stream = torch.Generator().manual_seed(0)
    assert draw_unconditional(0.0, 8, stream) is None
    assert torch.equal(torch.rand(3, generator=stream),
                       torch.rand(3, generator=torch.Generator().manual_seed(0)))
    share = draw_unconditional(0.1, 20_000, torch.Generator().manual_seed(1)).float().mean()
    assert 0.09 < float(share) < 0.11


def test_a_dropped_sample_trains_the_denoiser_but_not_the_similarity_target(parts):
    """L_SimMat asks a sample for a similarity to its inquiry; one trained without its
    condition was never told the inquiry or m, so only the conditioned rows enter it."""
    _, encoder, guided, scheduler = parts
    clean = torch.rand(4, 3, 32, 32) * 2 - 1
    identity = encoder(clean).detach()
    m, noise = torch.tensor([1.0, 0.5, 0.0, -1.0]), torch.randn_like(clean)
    timesteps = torch.tensor([10, 300, 600, 900])
    dropped = torch.tensor([False, True, False, True])
    both = cemiface_loss(guided, encoder, scheduler, clean, identity, m, noise, timesteps,
                         0.05, target_schedule="constant", unconditional=dropped)
    kept = cemiface_loss(guided, encoder, scheduler, clean[[0, 2]], identity[[0, 2]], m[[0, 2]],
                         noise[[0, 2]], timesteps[[0, 2]], 0.05, target_schedule="constant")
    assert torch.allclose(both.simmat, kept.simmat, atol=1e-6)
    assert torch.allclose(both.similarity, kept.similarity, atol=1e-6)
    all_dropped = cemiface_loss(guided, encoder, scheduler, clean, identity, m, noise, timesteps,
                                0.05, unconditional=torch.ones(4, dtype=torch.bool))
    assert float(all_dropped.simmat) == 0.0 and torch.isfinite(all_dropped.total)
    all_dropped.total.backward()
    assert guided.condition.null_context.grad.abs().sum() > 0


def test_guidance_is_null_plus_scale_times_the_conditional_step(parts):
    _, encoder, guided, _ = parts
    noisy, timesteps = torch.randn(2, 3, 32, 32), torch.tensor([500, 500])
    identity = encoder(torch.rand(2, 3, 32, 32) * 2 - 1)
    m = torch.tensor([1.0, 0.0])
    with torch.no_grad():
        conditional = guided(noisy, timesteps, identity, m)
        null = guided(noisy, timesteps, identity, m, torch.ones(2, dtype=torch.bool))
        for scale in (0.0, 1.0, 3.0):
            expected = null + scale * (conditional - null)
            got = guided_output(guided, noisy, timesteps, identity, m, scale)
            assert torch.allclose(got, expected, atol=1e-5)


def test_guided_samples_are_seeded_per_sample_and_differ_from_unguided(parts):
    _, encoder, guided, scheduler = parts
    identity = encoder(torch.rand(3, 3, 32, 32) * 2 - 1)
    m = torch.tensor([1.0, 0.0, -1.0])
    batch = sample_images(guided, scheduler, identity, m, [5, 6, 7], 32, steps=4,
                          guidance_scale=2.0)
    alone = sample_images(guided, scheduler, identity[1:2], m[1:2], [6], 32, steps=4,
                          guidance_scale=2.0)
    assert torch.allclose(batch[1:2], alone, atol=1e-4)
    plain = sample_images(guided, scheduler, identity, m, [5, 6, 7], 32, steps=4)
    assert not torch.allclose(batch, plain, atol=1e-3)


def test_guidance_on_a_generator_without_a_null_context_is_refused(parts):
    _, encoder, _, scheduler = parts
    plain = build_generator(tiny_config(), 64).eval()
    identity = encoder(torch.rand(1, 3, 32, 32) * 2 - 1)
    with pytest.raises(ValueError, match="condition.dropout"):
        sample_images(plain, scheduler, identity, torch.zeros(1), [1], 32, steps=2,
                      guidance_scale=2.0)


def test_a_guided_run_starts_from_a_checkpoint_trained_without_dropout(parts, tmp_path):
    """The shipped generator has no null context; a guided run continues it: every trained
    weight is taken, the null context starts at zeros, and a mismatch elsewhere is refused."""
    backbone, encoder, _, scheduler = parts
    plain = build_generator(tiny_config(), 64)
    save_generator(str(tmp_path), plain, scheduler, encoder_record("memory://e", backbone, 32),
                   {"step": 1, "image_size": 32, "code_version": "test"}, {"generator": {}})
    source = load_generator(str(tmp_path)).model
    guided = build_generator(tiny_config(condition=ConditionConfig(dropout=0.2)), 64)
    load_init_weights(guided, source)
    for name, value in source.state_dict().items():
        assert torch.equal(guided.state_dict()[name], value)
    assert torch.equal(guided.condition.null_context, torch.zeros_like(
        guided.condition.null_context))
    wider = build_generator(tiny_config(condition=ConditionConfig(tokens=2, dropout=0.2)), 64)
    with pytest.raises(RuntimeError):
        load_init_weights(wider, source)


def test_guidance_applies_only_inside_its_interval_of_noise_levels(parts):
    """Guidance over [0, 0.5) of T: the steps at or above T/2 take the conditional pass alone
    (one model call on the plain batch), those below it the guided pair."""
    _, encoder, guided, scheduler = parts
    identity = encoder(torch.rand(2, 3, 32, 32) * 2 - 1)
    calls = []

    class Counting(torch.nn.Module):
        guidable = True

        def forward(self, noisy, timesteps, identity, m, unconditional=None):
            calls.append((int(timesteps[0]), len(noisy)))
            return guided(noisy, timesteps, identity, m, unconditional)

    m = torch.tensor([1.0, 0.0])
    sample_images(Counting(), scheduler, identity, m, [1, 2], 32, steps=4, guidance_scale=2.0,
                  guidance_interval=(0.0, 0.5))
    assert calls == [(750, 2), (500, 2), (250, 4), (0, 4)]
    everywhere = sample_images(guided, scheduler, identity, m, [1, 2], 32, steps=4,
                               guidance_scale=2.0)
    limited = sample_images(guided, scheduler, identity, m, [1, 2], 32, steps=4,
                            guidance_scale=2.0, guidance_interval=(0.0, 0.5))
    assert not torch.allclose(everywhere, limited, atol=1e-4)
    from factory.config import SamplingConfig

    with pytest.raises(ValueError, match="guidance_interval"):
        SamplingConfig(guidance_interval=(0.6, 0.4))
