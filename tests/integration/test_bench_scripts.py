"""The speed scripts a GPU session runs, kept runnable: ``bench/gpu_check.py --device cpu --tiny``
and ``bench/recognizer_speed.py --tiny`` run end to end on a CPU (one thread each, at once) and
write the JSON their docstrings promise, with positive rates; both sampler benchmarks refuse a
malformed setting in one usage line. Neither script starts Ray: these tests are here, not in
tests/unit/, for their time alone (about 30 s of fresh interpreters and timing loops, a quarter
of `pytest tests/unit` on two cores), which the quick check cannot afford."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import REPO

ROOT = str(REPO)
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


def test_gpu_check_and_recognizer_speed_run_tiny_on_a_cpu(world, tmp_path):
    gpu_json, recognizer_json = tmp_path / "gpu.json", tmp_path / "recognizer.json"
    gpu = _start("gpu_check.py", "--device", "cpu", "--tiny", "--out", str(gpu_json))
    recognizer = _start("recognizer_speed.py", "--tiny", "--out", str(recognizer_json),
                        "--data", str(world / "faceworld" / "train"))
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
    data_path = speed["data_path"]  # the loader measured on the face world it was pointed at
    assert data_path["images_per_s"][0] > 0 and 0 < data_path["share_of_serial_step_at_fastest"] < 1
    assert "data path (ir-tiny@32 loader" in recognizer_output


def test_both_sampler_benchmarks_refuse_a_malformed_setting_in_one_usage_line():
    for script, flag in (("synthesis_speed.py", "--solvers"), ("solver_study.py", "--settings")):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), flag,
                                 "ddim:20;unipc:5"], cwd=ROOT, capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": ROOT})
        assert result.returncode == 2
        assert f"error: {flag}: 'ddim:20;unipc:5' is not [solver:]steps[@precision]" \
               "[+compile]" in result.stderr
