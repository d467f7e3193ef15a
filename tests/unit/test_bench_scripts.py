"""The speed scripts' own logic, in this process: the nominal bf16 peaks of known GPUs, the
generator levers' and the sampler benchmarks' setting parsers (the scripts run end to end:
tests/integration/test_bench_scripts.py)."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

from helpers import REPO

ROOT = str(REPO)


@pytest.mark.parametrize("name, tflops, product", [
    ("NVIDIA H100 80GB HBM3", 989.0, "H100 SXM"),
    ("NVIDIA H100 PCIe", 756.0, "H100 PCIe"),
    ("NVIDIA H100 NVL", 835.0, "H100 NVL"),
    ("NVIDIA H200", 989.0, "H200 SXM"),
    ("NVIDIA H200 NVL", 835.0, "H200 NVL"),
    ("NVIDIA A100-SXM4-80GB", None, None),
])
def test_nominal_bf16_peak_of_known_gpus(monkeypatch, name, tflops, product):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    nominal, found = importlib.import_module("gpu_check").nominal_bf16(name)
    assert found == product
    assert nominal == (tflops * 1e12 if tflops else None)


def test_a_lever_names_its_checkpoint_guidance_scale_and_interval():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        levers = importlib.import_module("generator_levers")
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))
    assert levers.parse_lever("w2 low half=runs/g/final@2,0,0.5") == (
        "w2 low half", "runs/g/final", 2.0, (0.0, 0.5))
    assert levers.parse_lever("shipped=assets/faceworld-generator") == (
        "shipped", "assets/faceworld-generator", 1.0, (0.0, 1.0))
    for bad in ("no-equals", "x=path@two", "x=path@2,0"):
        with pytest.raises(SystemExit):
            levers.parse_lever(bad)
    # 100 steps at 32 images/s and 100 more at 64 (batch 32): 100 s + 50 s
    meta = {"history": [{"step": 100, "images_per_s": 32.0}, {"step": 200, "images_per_s": 64.0}]}
    assert levers.training_hours(meta, 32) == pytest.approx(150 / 3600)


def _sampler_settings():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        return importlib.import_module("sampler_settings")
    finally:
        sys.path.remove(os.path.join(ROOT, "bench"))


def test_one_parser_reads_every_benchmarks_sampler_settings():
    settings = _sampler_settings()
    parse, setting = settings.parse_settings, settings.SamplerSetting
    assert parse("ddim:5,10,dpmsolver++:8@fp32,unipc:10+compile,ddim:20@bf16+compile") == [
        setting("ddim", 5, "auto", False), setting("ddim", 10, "auto", False),
        setting("dpmsolver++", 8, "fp32", False), setting("unipc", 10, "auto", True),
        setting("ddim", 20, "bf16", True)]
    assert parse(" ddim:20 , 15@fp16 ") == [setting("ddim", 20, "auto", False),
                                             setting("ddim", 15, "fp16", False)]
    for bad, reason in (("ddim:20;unipc:5", "separated by commas"), ("20", "name its solver"),
                        ("euler:20", "unknown solver 'euler'"),
                        ("ddim:20@fp64", "unknown precision 'fp64'"),
                        ("ddim:0", "at least 1"), ("ddim:20,", "an empty setting")):
        with pytest.raises(ValueError, match=reason):
            parse(bad)
