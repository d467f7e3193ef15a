"""Naming synthesis targets by measured similarity: the compliance curve, its inverse, the
refusals, and what a sample records."""

from __future__ import annotations

import json
import shutil

import pytest

from factory.config import MValuesConfig, SamplingConfig, load_config
from factory.errors import ConfigError, FormatError, UserError
from factory.eval.compliance_curve import CURVE_FILE, curve_document, m_axis
from factory.models.inference import prepare
from factory.synth.plan import shard_items
from factory.synth.sampler import sample_shard
from factory.synth.synthesize import make_plan
from factory.checkpoints.generator import load_generator

M = [1.0, 0.5, 0.0, -0.5, -1.0]
JUDGE_MEANS = [0.9, 0.6, 0.2, -0.2, -0.5]


def _write_curve(folder, means=JUDGE_MEANS, sampling: SamplingConfig | None = None) -> str:
    document = curve_document({"judge": (M, means), "E_id": (M, [0.7, 0.3, -0.1, -0.4, -0.6])},
                              (sampling or SamplingConfig()).model_dump(), str(folder), [32, 56],
                              4)
    (folder / CURVE_FILE).write_text(json.dumps(document))
    return str(folder)


def test_the_m_axis_passes_m_through_and_reads_no_curve(tmp_path):
    axis = m_axis(MValuesConfig(values=[0.3]), SamplingConfig(), str(tmp_path))
    assert axis.requested(0.3) == 0.3 and axis.record(0.3) == {}


def test_a_measured_target_becomes_the_m_the_curve_says_reaches_it(tmp_path):
    checkpoint = _write_curve(tmp_path)
    axis = m_axis(MValuesConfig(axis="judge", values=[0.6, 0.4]), SamplingConfig(), checkpoint)
    assert axis.requested(0.6) == pytest.approx(0.5)
    assert axis.requested(0.4) == pytest.approx(0.25)  # halfway between 0.6 (m .5) and 0.2 (m 0)
    assert axis.requested(-0.5) == pytest.approx(-1.0)
    targets = [0.85, 0.7, 0.1, -0.3]
    mapped = [axis.requested(t) for t in targets]
    assert mapped == sorted(mapped, reverse=True)  # monotone: a higher target, a higher m
    assert axis.record(0.4) == {"target_similarity": 0.4, "target_measured_by": "judge"}
    e_id = m_axis(MValuesConfig(axis="E_id", kind="range", low=-0.5, high=0.6, interval=0.1),
                  SamplingConfig(), checkpoint)
    assert e_id.requested(0.3) == pytest.approx(0.5)


def test_targets_out_of_reach_name_the_reachable_range(tmp_path):
    checkpoint = _write_curve(tmp_path)
    with pytest.raises(UserError, match=r"target 0.95 is outside .* judge axis \(-0.500 .. "
                                        r"0.900"):
        m_axis(MValuesConfig(axis="judge", values=[0.8, 0.95]), SamplingConfig(), checkpoint)
    with pytest.raises(UserError, match="outside"):
        m_axis(MValuesConfig(axis="judge", kind="uniform", low=-0.7, high=0.5), SamplingConfig(),
               checkpoint)


def test_a_curve_of_another_sampler_or_not_monotone_or_missing_is_refused(tmp_path):
    guided = SamplingConfig(guidance_scale=2.0)
    checkpoint = _write_curve(tmp_path, sampling=guided)
    with pytest.raises(UserError, match="guidance_scale 2.0 there, 1.0 here"):
        m_axis(MValuesConfig(axis="judge", values=[0.5]), SamplingConfig(), checkpoint)
    assert m_axis(MValuesConfig(axis="judge", values=[0.5]), guided, checkpoint).measured_by
    bent = tmp_path / "bent"
    bent.mkdir()
    _write_curve(bent, means=[0.9, 0.6, 0.7, -0.2, -0.5])
    with pytest.raises(UserError, match="not monotone"):
        m_axis(MValuesConfig(axis="judge", values=[0.5]), SamplingConfig(), str(bent))
    with pytest.raises(UserError, match=f"{CURVE_FILE}: not found"):
        m_axis(MValuesConfig(axis="judge", values=[0.5]), SamplingConfig(),
               str(tmp_path / "absent"))
    (bent / CURVE_FILE).write_text(json.dumps({"curves": {"judge": {"m": [1.0]}}}))
    with pytest.raises(FormatError, match="no judge curve"):
        m_axis(MValuesConfig(axis="judge", values=[0.5]), SamplingConfig(), str(bent))


def test_a_normal_draw_cannot_name_a_measured_target():
    with pytest.raises(ConfigError, match="axis judge takes kind values, range or uniform"):
        load_config(None, ["synthesis.m.axis=judge", "synthesis.m.kind=normal"])


def test_every_sample_records_its_target_and_the_m_it_was_sampled_at(world, tiny_generator,
                                                                     tmp_path):
    checkpoint = tmp_path / "generator"
    shutil.copytree(tiny_generator, checkpoint)
    _write_curve(checkpoint, sampling=SamplingConfig(steps=2, batch_size=4))
    config = load_config(None, [
        f"workdir={world}", f"synthesis.checkpoint={checkpoint}", "synthesis.inquiry.identities=2",
        "synthesis.inquiry.max_similarity=1.0", "synthesis.images_per_identity=2",
        "synthesis.sampling.steps=2", "synthesis.sampling.batch_size=4", "synthesis.m.axis=judge",
        "synthesis.m.values=[0.6,0.4]"])
    generator = load_generator(str(checkpoint))
    identities, _ = make_plan(config, generator)
    item = shard_items(identities, 2)[0]
    shard = sample_shard(generator, item, config.synthesis,
                         prepare(generator, config.synthesis.sampling, "cpu"))
    metas = [sample.meta for sample in shard.samples]
    assert [meta["target_similarity"] for meta in metas] == [0.6, 0.4] * 2
    assert [meta["m"] for meta in metas] == [pytest.approx(0.5), pytest.approx(0.25)] * 2
    assert {meta["target_measured_by"] for meta in metas} == {"judge"}
    assert {meta["guidance_scale"] for meta in metas} == {1.0}
