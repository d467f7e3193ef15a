"""``factory doctor``: one line per thing a run depends on, each checked in a few seconds.

The code version, Python, torch (CPU or CUDA, and which devices), the CPU (its model and the
matmul features of its instruction set, which decide whether bf16 autocast is native), Ray (a
private local cluster per run, or the address a run would join, and the token-authentication
state), the MLflow tracking URI every process would use, and the storage a run writes to (the
workdir, and the S3/GCS endpoint and credential variables that are set). Nothing is started:
Ray is imported, never initialised, and remote services are only asked whether they answer.
Every check runs in a daemon thread cut off after :data:`CHECK_TIMEOUT_S`, so a hanging network
call cannot hang the command. Secrets are never printed: credentials and tokens are reported as
present or absent only.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from factory import storage
from factory.config import FactoryConfig
from factory.provenance import CPUINFO, MATMUL_FLAGS, NATIVE_BF16_FLAGS, code_version, cpu_info
from factory.runtime import mlflow_tracking_uri, ray_address

CHECK_TIMEOUT_S = 10.0
"""The most one check may take (imports of torch and Ray included) before it counts as failed."""
NETWORK_TIMEOUT_S = 3.0
"""How long a service gets to answer a connection or an HTTP request."""
MIN_PYTHON = (3, 10)
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
                      "AWS_DEFAULT_REGION", "AWS_PROFILE")
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "GOOGLE_APPLICATION_CREDENTIALS")
@dataclass
class Check:
    """One line of the report: what was checked, whether it is fine, and what was found."""

    label: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.label:<12}{'ok' if self.ok else 'FAIL':<6}{self.detail}"


def bounded(label: str, check: Callable[[], Check], timeout_s: float = CHECK_TIMEOUT_S) -> Check:
    """Run ``check`` in a daemon thread; a failed :class:`Check` if it raises or takes longer
    than ``timeout_s`` (the thread is left behind and dies with the process)."""
    outcome: list[Check] = []

    def run() -> None:
        try:
            outcome.append(check())
        except Exception as exc:  # any failure of a check is a finding, not a crash
            outcome.append(Check(label, False, f"{type(exc).__name__}: {exc}".splitlines()[0]))

    thread = threading.Thread(target=run, name=f"doctor-{label}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else Check(label, False, f"no answer within {timeout_s:g} s")


def run_doctor(config: FactoryConfig, cli_address: str | None = None) -> list[Check]:
    """Every check, in report order."""
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("version", lambda: Check("version", True, code_version())),
        ("python", check_python),
        ("torch", check_torch),
        ("cpu", check_cpu),
        ("ray", lambda: check_ray(config, cli_address)),
        ("mlflow", lambda: check_mlflow(config)),
        ("storage", lambda: check_storage(config)),
    ]
    return [bounded(label, check) for label, check in checks]


def check_python() -> Check:
    version = sys.version_info
    ok = version[:2] >= MIN_PYTHON
    needs = "" if ok else f" (facefactory needs >= {'.'.join(map(str, MIN_PYTHON))})"
    return Check("python", ok, f"{platform.python_version()} at {sys.executable}{needs}")


def check_torch() -> Check:
    import torch

    if not torch.cuda.is_available():
        return Check("torch", True, f"{torch.__version__}, CPU only (no CUDA device visible)")
    names = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    return Check("torch", True, f"{torch.__version__}, CUDA {torch.version.cuda}, "
                                f"{len(names)} device(s): {', '.join(names)}")


def check_cpu(path: str = CPUINFO) -> Check:
    """The CPU model, its matmul features and whether bf16 autocast is native: informational,
    never a failure (float32 runs everywhere)."""
    info = cpu_info(path)
    if info.flags is None:
        features = ", ".join(f"{flag} unknown" for flag in MATMUL_FLAGS)
    else:
        features = ", ".join(f"{flag} {'yes' if flag in info.flags else 'no'}"
                             for flag in MATMUL_FLAGS)
    if info.native_bf16 is None:
        bf16 = "bf16 autocast native: unknown"
    elif info.native_bf16:
        bf16 = "bf16 autocast native: yes"
    else:
        bf16 = f"bf16 autocast native: no (needs {' or '.join(NATIVE_BF16_FLAGS)})"
    model = info.model or ("unknown" if os.path.exists(path) else f"unknown (no {path})")
    return Check("cpu", True, f"{model}; {features}; {bf16}")


def check_ray(config: FactoryConfig, cli_address: str | None) -> Check:
    import ray

    address = ray_address(config.runtime, cli_address)
    auth_ok, auth = ray_token_state(address)
    if address is None or address == "local":
        cpus = config.runtime.num_cpus or os.cpu_count() or 1
        where, reachable = f"local: each run starts its own cluster ({cpus} CPUs)", True
    elif address == "auto":
        where, reachable = "auto: the cluster `ray start` began on this machine (not resolved " \
                           "here)", True
    else:
        reachable, answer = _connects(address)
        where = f"{address} ({_address_source(config, cli_address)}): {answer}"
    return Check("ray", reachable and auth_ok, f"{ray.__version__}, {where}; {auth}")


def _address_source(config: FactoryConfig, cli_address: str | None) -> str:
    if cli_address:
        return "--address"
    return "RAY_ADDRESS" if os.environ.get("RAY_ADDRESS") else "runtime.ray_address"


def ray_token_state(address: str | None) -> tuple[bool, str]:
    """Ray's token authentication as a run would meet it; False only where joining the cluster
    must fail (token mode, a cluster to join, no token anywhere). The token is never shown."""
    mode = os.environ.get("RAY_AUTH_MODE")
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN"):
        token = "token in RAY_AUTH_TOKEN"
    elif os.path.isfile(token_path):
        token = f"token file {token_path}"
    else:
        token = "no token"
    if mode is None:
        state = "token auth: RAY_AUTH_MODE unset (a new local cluster turns it on)"
    else:
        state = f"token auth: RAY_AUTH_MODE={mode}"
    joins = address not in (None, "local")
    ok = not (mode == "token" and joins and token == "no token")
    return ok, f"{state}, {token}" + ("" if ok else " (set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)")


def _connects(address: str) -> tuple[bool, str]:
    """Whether a TCP connection to the address's host and port opens within the timeout."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.hostname is None or parts.port is None:
        return False, "expected host:port or ray://host:port"
    try:
        with socket.create_connection((parts.hostname, parts.port), NETWORK_TIMEOUT_S):
            return True, "reachable"
    except OSError as exc:
        return False, f"cannot connect ({exc.strerror or exc})"


def check_mlflow(config: FactoryConfig) -> Check:
    uri = mlflow_tracking_uri(config.runtime)
    source = ("MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI")
              else "runtime.mlflow_tracking_uri" if config.runtime.mlflow_tracking_uri
              else "default")
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        ok, found = _answers_health(uri)
    elif scheme == "sqlite":
        ok, found = _local_store(uri[len("sqlite:///"):])
    elif scheme in ("", "file"):
        ok, found = _local_store(urlsplit(uri).path if scheme else uri)
    else:
        ok, found = True, "not checked (a scheme doctor does not know)"
    return Check("mlflow", ok, f"{uri} ({source}): {found}")


def _answers_health(uri: str) -> tuple[bool, str]:
    """An MLflow server answers ``GET /health`` with 200."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=NETWORK_TIMEOUT_S) \
                as response:
            return response.status == 200, f"/health answered {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"/health answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"no answer from /health ({reason})"


def _local_store(path: str) -> tuple[bool, str]:
    """A local store (SQLite file or directory): there, or creatable where it would go."""
    if os.path.exists(path):
        writable = os.access(path, os.W_OK)
        return writable, "exists" if writable else "exists, not writable"
    parent = _existing_ancestor(os.path.dirname(os.path.abspath(path)))
    writable = os.access(parent, os.W_OK)
    return writable, ("created on first use" if writable
                      else f"cannot be created ({parent} is not writable)")


def _existing_ancestor(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_storage(config: FactoryConfig) -> Check:
    workdir = storage.absolute(config.workdir)
    if storage.is_remote(workdir):
        filesystem, path = storage.resolve(workdir)
        filesystem.get_file_info(path)  # one request: credentials and endpoint work
        ok, found = True, "reachable"
    else:
        ok, found = _local_store(workdir)
    endpoints = [f"{name}={os.environ[name]}" for name in ENDPOINT_VARIABLES
                 if os.environ.get(name)]
    credentials = [name for name in CREDENTIAL_VARIABLES if os.environ.get(name)]
    configured = (", ".join(endpoints) if endpoints
                  else f"no endpoint set ({ENDPOINT_VARIABLES[0]} etc.)")
    if credentials:
        configured += f"; {', '.join(credentials)} set"
    return Check("storage", ok, f"workdir {workdir}: {found}; {configured}")

