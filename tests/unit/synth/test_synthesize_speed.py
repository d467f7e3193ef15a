"""The fast-synthesis settings: multistep solvers, autocast, memory format, the resolved
inference settings, and the autoscaling actor range (no Ray cluster needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from factory.config import SamplingConfig, load_config
from factory.errors import ConfigError
from factory import provenance
from factory.models import inference
from factory.models.inference import CPU_BATCH_SIZE, prepare
from factory.models.sampling import sample_images
from factory.synth.pool import actor_pool
from factory.checkpoints.generator import load_generator

SHIPPED = "assets/faceworld-generator"
BF16_MEAN_ABS = 0.02
"""bf16 autocast vs float32 on the shipped generator, 5 DDIM steps, pixels in [-1, 1]: mean
absolute difference at most 0.02 (measured 0.005), and E_id's cosine between the two images
at least 0.999 (measured 0.9999)."""
BF16_MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def shipped():
    torch.manual_seed(0)
    generator = load_generator(SHIPPED)
    dim = generator.model.condition.config.identity_dim
    identity = torch.nn.functional.normalize(
        torch.randn(4, dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    return generator, identity, torch.tensor([1.0, 0.5, 0.0, -0.5])


def _sample(shipped, seeds=(1, 2, 3, 4), rows=slice(None), **options):
    generator, identity, m = shipped
    return sample_images(generator.model, generator.scheduler, identity[rows], m[rows],
                         list(seeds), generator.image_size, **options)


@pytest.mark.parametrize("solver", ["dpmsolver++", "unipc"])
def test_multistep_solvers_are_seeded_per_sample_and_differ_from_ddim(shipped, solver):
    batch = _sample(shipped, steps=4, solver=solver)
    alone = _sample(shipped, seeds=[2], rows=slice(1, 2), steps=4, solver=solver)
    assert torch.allclose(batch[1:2], alone, atol=1e-5)
    assert batch.min() >= -1 and batch.max() <= 1
    assert not torch.allclose(batch, _sample(shipped, steps=4, solver="ddim"), atol=1e-3)
    estimates = []
    _sample(shipped, steps=4, solver=solver, on_step=lambda t, x: estimates.append((t, x)))
    assert [t for t, _ in estimates] == sorted((t for t, _ in estimates), reverse=True)
    assert len(estimates) == 4 and all(x.abs().max() <= 1 for _, x in estimates)


def test_multistep_solvers_converge_as_steps_grow(shipped):
    """DPM-Solver++ and UniPC integrate the same ODE: at 20 steps they nearly agree, and 10
    steps of DPM-Solver++ are closer to its 20-step result than 5 steps are."""
    dpm = {steps: _sample(shipped, steps=steps, solver="dpmsolver++") for steps in (5, 10, 20)}
    unipc = _sample(shipped, steps=20, solver="unipc")
    assert (dpm[20] - unipc).abs().mean() < 0.01
    assert (dpm[10] - dpm[20]).abs().mean() < (dpm[5] - dpm[20]).abs().mean()


@pytest.mark.parametrize("solver", ["ddim", "dpmsolver++"])
def test_bf16_autocast_stays_within_tolerance_of_fp32(shipped, solver):
    generator = shipped[0]
    full = _sample(shipped, steps=5, solver=solver)
    half = _sample(shipped, steps=5, solver=solver, autocast=torch.bfloat16)
    assert half.dtype == torch.float32
    assert (full - half).abs().mean() <= BF16_MEAN_ABS
    cosine = (generator.encoder(full) * generator.encoder(half)).sum(-1)
    assert cosine.min() >= BF16_MIN_COSINE
    assert not torch.equal(full, half)  # autocast did run the model in bf16


def test_channels_last_gives_the_same_images(shipped):
    generator = load_generator(SHIPPED)
    settings = prepare(generator, SamplingConfig(channels_last="on"), "cpu")
    assert settings.channels_last
    weight = generator.model.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    last = sample_images(generator.model, generator.scheduler, shipped[1], shipped[2],
                         [1, 2, 3, 4], 32, steps=3, **settings.sampler_options())
    assert torch.allclose(last, _sample(shipped, steps=3), atol=1e-4)


def test_prepare_resolves_auto_on_the_cpu():
    settings = prepare(load_generator(SHIPPED), SamplingConfig(batch_size="auto"), "cpu")
    assert settings.record() == {"device": "cpu", "precision": "fp32", "channels_last": False,
                                 "compile": False, "batch_size": CPU_BATCH_SIZE}
    assert settings.autocast is None
    explicit = prepare(load_generator(SHIPPED), SamplingConfig(precision="bf16", batch_size=8),
                       "cpu")
    assert explicit.autocast is torch.bfloat16 and explicit.batch_size == 8


@pytest.mark.parametrize("flags, expected", [("fpu avx2 avx512f avx512_bf16", "bf16"),
                                             ("fpu avx2 amx_bf16 amx_tile", "bf16"),
                                             ("fpu avx2 avx512f", "fp32")])
def test_native_precision_takes_bf16_only_where_the_cpu_has_it(monkeypatch, tmp_path,
                                                               flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    monkeypatch.setattr(inference, "cpu_info", lambda: provenance.cpu_info(str(cpuinfo)))
    assert inference.resolve_precision("native", torch.device("cpu")) == expected
    assert inference.resolve_precision("auto", torch.device("cpu")) == "fp32"


def test_sampling_config_checks():
    with pytest.raises(ConfigError, match="eta"):
        load_config(None, ["synthesis.sampling.solver=unipc", "synthesis.sampling.eta=0.5"])
    with pytest.raises(ConfigError, match="synthesis.sampling.batch_size"):
        load_config(None, ["synthesis.sampling.batch_size=0"])
    with pytest.raises(ConfigError, match="synthesis.sampling.solver"):
        load_config(None, ["synthesis.sampling.solver=euler"])
    config = load_config(None, ["synthesis.sampling.batch_size=auto",
                                "synthesis.sampling.solver=dpmsolver++"])
    assert config.synthesis.sampling.batch_size == "auto"


def test_actor_range_builds_an_autoscaling_pool():
    fixed = load_config(None, ["synthesis.actors.num_actors=3"]).synthesis.actors
    assert fixed.size_range() == (3, 3)
    assert actor_pool(fixed, shards=10).min_size == actor_pool(fixed, shards=10).max_size == 3
    assert actor_pool(fixed, shards=2).max_size == 2
    ranged = load_config(None, ["synthesis.actors.num_actors=[1,8]"]).synthesis.actors
    pool = actor_pool(ranged, shards=20)
    assert (pool.min_size, pool.max_size) == (1, 8)
    assert actor_pool(ranged, shards=5).max_size == 5
    # one shard per actor at a time: the first actor up must not queue the others' shards
    assert actor_pool(fixed, shards=2).max_tasks_in_flight_per_actor == 1
    assert pool.max_tasks_in_flight_per_actor == 1
    with pytest.raises(ConfigError, match="num_actors"):
        load_config(None, ["synthesis.actors.num_actors=[4,2]"])
    with pytest.raises(ConfigError, match="num_actors"):
        load_config(None, ["synthesis.actors.num_actors=0"])


def test_a_plan_written_before_the_solver_settings_resumes_as_legacy_sampling(tmp_path):
    """plan.json of an earlier version has no solver or precision: it was DDIM in float32,
    and a rerun that asks for exactly that resumes, while any other sampler is refused."""
    from factory.errors import UserError
    from factory.synth.synthesize import LEGACY_SAMPLING, claim_output, previous_plan

    old = {"steps": 20, "eta": 0.0, "batch_size": 64, "identity_handoff": None}
    (tmp_path / "plan.json").write_text(json.dumps({"synthesis": {"sampling": old},
                                                    "generator": "g@step1"}))
    same = SamplingConfig(**{**old, **LEGACY_SAMPLING}).model_dump(mode="json")
    previous = previous_plan(str(tmp_path))
    claim_output(str(tmp_path), {"synthesis": {"sampling": same}, "generator": "g@step1"},
                 previous)
    other = SamplingConfig(**old, solver="unipc").model_dump(mode="json")
    with pytest.raises(UserError, match="another plan"):
        claim_output(str(tmp_path), {"synthesis": {"sampling": other}, "generator": "g@step1"},
                     previous)


def test_an_inquiry_embedding_actor_imports_no_diffusers():
    """The embedding stage's actors load E_id only; importing the UNet's library would add
    about 2 s to every one of them (and to the planning before any shard starts)."""
    probe = ("import sys, factory.synth.inquiries; "
             "print(sorted(n for n in sys.modules if n.split('.')[0] == 'diffusers'))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert found == "[]"
