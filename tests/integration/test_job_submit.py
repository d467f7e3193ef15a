"""A stage goes in through ``ray job submit`` to a real Ray head and leaves its outputs.

The head is started on loopback as ``ray start --head --block`` in its own process group, with
every port chosen free and its temp directory private to the test, so other Ray instances on
the machine neither see it nor get touched by it: it is stopped by signalling that process
group, never with ``ray stop``. Every wait is bounded.

Two stages are submitted at smoke size (``configs/smoke.yaml``): the face world
(``jobs/faceworld.py``), then synthesis (``jobs/synthesize.py``) from its inquiry set with an
untrained generator checkpoint the test writes. They exercise the job path end to end
(working_dir upload, the jobs/ entry points, the CLI, a Ray Data actor pool inside the job,
shards and manifest written from inside it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers import REPO

# The `ray` and `python` of the interpreter running the tests (not resolved: a venv's python
# is a symlink, and its bin directory is what PATH needs).
VENV_BIN = os.path.dirname(sys.executable)
RAY = os.path.join(VENV_BIN, "ray")

HEAD_START_TIMEOUT_S = 180
SUBMIT_TIMEOUT_S = 420
STOP_TIMEOUT_S = 30
MAX_UPLOAD_MIB = 40.0  # the code plus the shipped face-world generators and judge (assets/, 34 MB)
# Unix socket paths (under the temp dir's session folder) must stay under 108 bytes.
MAX_TEMP_DIR_CHARS = 40


@dataclass
class Head:
    dashboard_url: str
    temp_dir: Path
    env: dict[str, str]  # what every `ray` command talking to this head runs with


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open together, then released)."""
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]


def _short_temp_dir(tmp_path: Path, stack: ExitStack) -> Path:
    """tmp_path/ray when short enough for Ray's socket paths, else a short private dir."""
    candidate = tmp_path / "ray"
    if len(str(candidate)) <= MAX_TEMP_DIR_CHARS:
        candidate.mkdir()
        return candidate
    path = Path(tempfile.mkdtemp(prefix="ffray-"))
    stack.callback(shutil.rmtree, path, ignore_errors=True)
    return path


def _dashboard_up(url: str, token: str) -> bool:
    request = urllib.request.Request(f"{url}/api/version",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            pytest.fail(f"the test head refused its own token (HTTP {exc.code})")
        return False
    except OSError:
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def _stop_head(proc: subprocess.Popen) -> None:
    """SIGTERM the head's process group, SIGKILL it after a timeout; then SIGKILL, by pid, any
    descendant still running (Ray's workers put themselves in process groups of their own)."""
    descendants = _descendants(proc.pid)
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    _kill_survivors(descendants)


def _descendants(pid: int) -> list:
    try:
        import psutil  # ray[default] depends on it

        return psutil.Process(pid).children(recursive=True)
    except Exception:  # no psutil, or the head already gone: the group signal must do
        return []


def _kill_survivors(processes: list, timeout_s: float = 10) -> None:
    if not processes:
        return
    import psutil

    def running() -> list:
        alive = []
        for p in processes:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        return alive

    deadline = time.monotonic() + timeout_s
    while running() and time.monotonic() < deadline:
        time.sleep(0.5)  # workers exit on their own once their raylet is gone
    for p in running():
        try:
            p.kill()  # psutil checks the pid still names the process it saw
        except psutil.Error:
            pass


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[Head]:
    if not os.access(RAY, os.X_OK):
        pytest.skip(f"no `ray` next to {sys.executable} (needs ray[default])")
    with ExitStack() as stack:
        temp_dir = _short_temp_dir(tmp_path, stack)
        (gcs, dashboard, client, agent_http, agent_grpc, env_agent, metrics, node_manager,
         object_manager) = _free_ports(9)
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # On SIGTERM the head would first drain itself for up to 30 s; a test has nothing to
        # drain, so it goes down at once (SIGKILL still follows if it does not).
        env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
        # Anything a stage logs to MLflow stays in the test's directory.
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
        # Token authentication, as Ray enables it by default (a local ray.init() leaves a token
        # in ~/.ray/auth_token, which a later `ray start` picks up): a private token in the
        # environment of the head and of every client, so whatever ~/.ray holds plays no part.
        token = secrets.token_hex(32)
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = token
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        command = [
            RAY, "start", "--head", "--block",
            "--node-ip-address=127.0.0.1", f"--port={gcs}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={env_agent}",
            f"--metrics-export-port={metrics}",
            f"--node-manager-port={node_manager}",
            f"--object-manager-port={object_manager}",
            "--num-cpus=2", "--object-store-memory=300000000",
            f"--temp-dir={temp_dir}", "--disable-usage-stats",
        ]
        log_path = tmp_path / "ray-start.log"
        log = stack.enter_context(open(log_path, "wb"))
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=tmp_path, start_new_session=True)
        stack.callback(_stop_head, proc)

        url = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + HEAD_START_TIMEOUT_S
        while not _dashboard_up(url, token):
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"dashboard not up after {HEAD_START_TIMEOUT_S}s:\n"
                            f"{_tail(log_path)}")
            time.sleep(1)
        yield Head(dashboard_url=url, temp_dir=temp_dir, env=env)


def _ray_job(head: Head, verb: str, submission_id: str) -> str:
    """``ray job <verb>`` against the test head (the CLI carries the head's token)."""
    result = subprocess.run([RAY, "job", verb, "--address", head.dashboard_url, submission_id],
                            capture_output=True, text=True, env=head.env, timeout=60)
    return result.stdout + result.stderr


def _tree_mib(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def _unpacked_working_dirs(temp_dir: Path) -> list[Path]:
    root = temp_dir / "session_latest" / "runtime_resources" / "working_dir_files"
    return [p for p in root.glob("*") if p.is_dir()]


def _submit(head: Head, submission_id: str, *entrypoint: str) -> str:
    """``ray job submit`` and wait; fails the test unless the job SUCCEEDED."""
    # The excludes a user submits with (jobs/runtime_env.yaml), on top of .gitignore.
    excludes = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())["excludes"]
    command = [
        RAY, "job", "submit", "--address", head.dashboard_url,
        "--working-dir", str(REPO),
        "--runtime-env-json", json.dumps({"excludes": excludes}),
        "--submission-id", submission_id, "--", "python", *entrypoint,
    ]
    started = time.monotonic()
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=head.env,
                                cwd=REPO, timeout=SUBMIT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        _ray_job(head, "stop", submission_id)  # the head goes down with the fixture anyway
        pytest.fail(f"ray job submit did not finish in {SUBMIT_TIMEOUT_S}s:\n{exc.stdout}")
    output = result.stdout + result.stderr
    print(f"ray job submit {entrypoint[0]}: {time.monotonic() - started:.1f}s, "
          f"exit {result.returncode}")
    assert result.returncode == 0, output[-5000:]
    status = _ray_job(head, "status", submission_id)
    assert "succeeded" in status, status + _ray_job(head, "logs", submission_id)[-3000:]
    return output


def test_faceworld_and_synthesis_jobs_submit_and_write_outputs(ray_head: Head, tmp_path: Path):
    from conftest import save_tiny_generator
    from factory import layout
    from factory.config import load_config
    from factory.formats.shards import iter_shard

    workdir = tmp_path / "smoke"
    tag = f"{os.getpid()}-{int(time.time())}"
    _submit(ray_head, f"faceworld-smoke-{tag}", "jobs/faceworld.py", "--config",
            "configs/smoke.yaml", f"workdir={workdir}")

    # What the head unpacked is the code, not the venv, the runs or the repository history.
    unpacked = _unpacked_working_dirs(ray_head.temp_dir)
    assert len(unpacked) == 1, unpacked
    assert _tree_mib(unpacked[0]) < MAX_UPLOAD_MIB
    shipped = {p.name for p in unpacked[0].iterdir()}
    assert {"factory", "jobs", "configs"} <= shipped
    assert not shipped & {".venv", "runs", ".git", "mlflow.db", "mlruns"}, shipped

    config = load_config(str(REPO / "configs" / "smoke.yaml"), [f"workdir={workdir}"])
    out = Path(layout.faceworld_uri(config))
    for name in ("train/train.rec", "train/train.idx", "train/property", "summary.json"):
        assert (out / name).is_file(), name
    for uri in layout.benchmark_uris(config):
        assert Path(uri).is_file(), uri
    summary = json.loads((out / "summary.json").read_text())
    assert summary["identities"] == config.faceworld.identities

    generator = save_tiny_generator(str(tmp_path / "generator"), str(out / "train"))
    _submit(ray_head, f"synthesize-smoke-{tag}", "jobs/synthesize.py", "--config",
            "configs/smoke.yaml", f"workdir={workdir}", f"synthesis.checkpoint={generator}")
    dataset = Path(layout.synthesis_out_uri(config))
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["counts"]["samples"] == 6 * 2 and manifest["counts"]["shards"] == 3
    keys = [s["__key__"] for shard in manifest["shards"]
            for s in iter_shard(str(dataset / "shards" / shard["shard"]))]
    assert len(keys) == len(set(keys)) == 12
