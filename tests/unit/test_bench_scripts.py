"""The speed scripts a GPU session runs, kept runnable: ``bench/gpu_check.py --device cpu --tiny``
and ``bench/recognizer_speed.py --tiny`` run end to end on a CPU (one thread each, at once) and
write the JSON their docstrings promise, with positive rates. Neither starts Ray."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_CHECK_ROWS = {"sampling", "sampling_guided", "recognizer", "recognizer_channels_last",
                  "generator_training"}


def _start(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", script), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": ROOT})


def _finish(process: subprocess.Popen) -> str:
    try:
        output, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, output
    return output


def test_gpu_check_and_recognizer_speed_run_tiny_on_a_cpu(tmp_path):
    gpu_json, recognizer_json = tmp_path / "gpu.json", tmp_path / "recognizer.json"
    gpu = _start("gpu_check.py", "--device", "cpu", "--tiny", "--out", str(gpu_json))
    recognizer = _start("recognizer_speed.py", "--tiny", "--out", str(recognizer_json))
    gpu_output, recognizer_output = _finish(gpu), _finish(recognizer)

    check = json.loads(gpu_json.read_text())
    assert check["device"] == "cpu" and check["device_name"] and check["tiny"] is True
    assert check["device_name"] in gpu_output
    assert check["bf16_peak"]["attainable"]["used"] > 0 and check["bf16_peak"]["nominal"] is None
    assert set(check["rows"]) == GPU_CHECK_ROWS
    for name, row in check["rows"].items():
        assert row["median"] > 0 and row["images_per_s"] > 0, name
        assert row["flops_per_image"] > 0 and row["fraction_of_attainable"] > 0, name
        assert row["peak_memory_bytes"] is None, name  # GPU memory only
        assert row["label"] in gpu_output, name
    rows = check["rows"]
    assert rows["sampling_guided"]["flops_per_image"] == 2 * rows["sampling"]["flops_per_image"]
    assert rows["generator_training"]["unit"] == "steps/s"
    assert rows["generator_training"]["images_per_s"] == pytest.approx(
        rows["generator_training"]["median"] * rows["generator_training"]["batch"])

    speed = json.loads(recognizer_json.read_text())
    assert speed["device"] == "cpu" and speed["device_name"] and speed["threads"] == 1
    assert speed["attainable_flops"]["used"]["fp32"] > 0
    settings = {(row["shape"], row["precision"], row["channels_last"]) for row in speed["rows"]}
    assert {("ir-tiny@32", "fp32", False), ("ir-tiny@32", "fp32", True)} <= settings
    for row in speed["rows"]:
        assert all(rate > 0 for rate in row["images_per_s"]) and row["fraction_of_attainable"] > 0
        assert 2 < row["flops_per_image"]["step"] / row["flops_per_image"]["forward"] < 4
    assert "recognizer training step" in recognizer_output


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


def test_both_sampler_benchmarks_refuse_a_malformed_setting_in_one_usage_line():
    for script, flag in (("synthesis_speed.py", "--solvers"), ("solver_study.py", "--settings")):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), flag,
                                 "ddim:20;unipc:5"], cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": ROOT})
        assert result.returncode == 2
        assert f"error: {flag}: 'ddim:20;unipc:5' is not [solver:]steps[@precision]" \
               "[+compile]" in result.stderr
