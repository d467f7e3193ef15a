"""``factory --version`` and ``factory doctor``: the version every artefact records, and one
bounded line per dependency that starts nothing and fails (exit 1) where a run would."""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from factory.cli import main
from factory.doctor import Check, bounded, check_cpu
from factory.provenance import cpu_info
from factory.provenance import code_version
from helpers import REPO

LABELS = ["version", "python", "torch", "cpu", "ray", "mlflow", "storage"]
ROOT = str(REPO)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No cluster, MLflow server, endpoint or Ray token from the machine running the tests."""
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN",
                 "RAY_AUTH_TOKEN_PATH", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def _doctor(capsys, *overrides) -> tuple[int, dict[str, tuple[str, str]]]:
    """Exit code and ``{label: (status, detail)}`` in printed order."""
    code = main(["doctor", *overrides])
    lines = capsys.readouterr().out.splitlines()
    parsed = {}
    for line in lines:
        label, status, detail = line.split(maxsplit=2)
        parsed[label] = (status, detail)
    assert list(parsed) == LABELS and len(lines) == len(LABELS)
    return code, parsed


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_version_prints_the_code_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == code_version() + "\n"


def test_version_from_a_fresh_process_names_the_commit():
    result = subprocess.run([sys.executable, "-m", "factory.cli", "--version"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0 and result.stderr == ""
    sha = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert re.fullmatch(rf"facefactory \S+ git {sha[:12]}(-dirty)?\n", result.stdout)


def test_doctor_on_a_local_setup_is_all_ok_and_starts_no_ray(clean_env, capsys, monkeypatch):
    import ray

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "secret-key-id")
    code, report = _doctor(capsys, f"workdir={clean_env}/runs", "runtime.num_cpus=3",
                           f"runtime.mlflow_tracking_uri=sqlite:///{clean_env}/mlflow.db")
    assert code == 0 and all(status == "ok" for status, _ in report.values()), report
    assert report["version"][1] == code_version()
    assert report["python"][1].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    assert "CPU only" in report["torch"][1] or "CUDA" in report["torch"][1]
    assert "avx512_bf16 " in report["cpu"][1] and "bf16 autocast native: " in report["cpu"][1]
    assert f"{ray.__version__}, local: each run starts its own cluster (3 CPUs)" in \
        report["ray"][1]
    assert "RAY_AUTH_MODE unset" in report["ray"][1] and "no token" in report["ray"][1]
    assert report["mlflow"][1] == (f"sqlite:///{clean_env}/mlflow.db "
                                   "(runtime.mlflow_tracking_uri): created on first use")
    assert report["storage"][1] == (f"workdir {clean_env}/runs: created on first use; "
                                    "AWS_ENDPOINT_URL=http://127.0.0.1:9000; "
                                    "AWS_ACCESS_KEY_ID set")
    assert not ray.is_initialized()


def test_unreachable_ray_and_mlflow_fail_with_exit_1(clean_env, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    code, report = _doctor(capsys, f"workdir={clean_env}")
    assert code == 1
    assert report["ray"][0] == "FAIL" and "(RAY_ADDRESS): cannot connect" in report["ray"][1]
    assert report["mlflow"][0] == "FAIL" and "(MLFLOW_TRACKING_URI): no answer" in \
        report["mlflow"][1]
    assert report["storage"][0] == "ok"


def test_a_reachable_cluster_and_mlflow_server_are_ok(clean_env, capsys, monkeypatch):
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        code, report = _doctor(capsys, f"workdir={clean_env}",
                               f"runtime.ray_address=ray://127.0.0.1:{port}",
                               f"runtime.mlflow_tracking_uri=http://127.0.0.1:{port}")
    finally:
        server.shutdown()
    assert code == 0, report
    assert f"ray://127.0.0.1:{port} (runtime.ray_address): reachable" in report["ray"][1]
    assert report["mlflow"][1].endswith("/health answered 200")


def test_token_mode_without_a_token_fails_and_a_token_is_never_printed(clean_env, capsys,
                                                                      monkeypatch):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        code, report = _doctor(capsys, f"workdir={clean_env}", "--address", address)
        assert code == 1 and report["ray"][0] == "FAIL"
        assert f"{address} (--address): reachable" in report["ray"][1]
        assert "RAY_AUTH_MODE=token, no token (set RAY_AUTH_TOKEN" in report["ray"][1]

        monkeypatch.setenv("RAY_AUTH_TOKEN", "do-not-print-me")
        code, report = _doctor(capsys, f"workdir={clean_env}", "--address", address)
        assert code == 0 and "token in RAY_AUTH_TOKEN" in report["ray"][1]
        assert "do-not-print-me" not in str(report)
    finally:
        server.close()


def test_a_check_that_hangs_or_raises_is_one_failed_line():
    started = time.perf_counter()
    hung = bounded("slow", lambda: time.sleep(5) or Check("slow", True, ""), timeout_s=0.2)
    assert time.perf_counter() - started < 2
    assert (hung.ok, hung.detail) == (False, "no answer within 0.2 s")

    def broken():
        raise OSError("endpoint refused\nsecond line")

    failed = bounded("storage", broken)
    assert (failed.ok, failed.detail) == (False, "OSError: endpoint refused")
    assert failed.line().startswith("storage     FAIL  OSError")


CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
model name\t: {model}
flags\t\t: {flags}

processor\t: 1
model name\t: a second processor is not reported
flags\t\t: fpu
"""


@pytest.mark.parametrize("model, flags, features, native", [
    ("Intel(R) Xeon(R) Platinum 8480+", "fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile",
     "avx2 yes, avx512f yes, avx512_bf16 yes, amx_bf16 yes, amx_tile yes", "yes"),
    ("AMD EPYC 9R14 96-Core Processor", "fpu avx2 avx512f avx512_bf16",
     "avx2 yes, avx512f yes, avx512_bf16 yes, amx_bf16 no, amx_tile no", "yes"),
    ("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "fpu avx avx2",
     "avx2 yes, avx512f no, avx512_bf16 no, amx_bf16 no, amx_tile no",
     "no (needs avx512_bf16 or amx_bf16)"),
])
def test_cpu_line_names_the_model_its_matmul_features_and_native_bf16(tmp_path, model, flags,
                                                                       features, native):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(vendor="x", model=model, flags=flags))
    check = check_cpu(str(path))
    assert check.ok and check.label == "cpu"
    assert check.detail == f"{model}; {features}; bf16 autocast native: {native}"
    assert cpu_info(str(path)).native_bf16 == (native == "yes")


def test_cpu_line_says_unknown_without_cpuinfo(tmp_path):
    check = check_cpu(str(tmp_path / "absent"))
    assert check.ok
    assert check.detail == (f"unknown (no {tmp_path / 'absent'}); avx2 unknown, avx512f unknown, "
                            "avx512_bf16 unknown, amx_bf16 unknown, amx_tile unknown; "
                            "bf16 autocast native: unknown")
    assert cpu_info(str(tmp_path / "absent")).native_bf16 is None
