"""The code version recorded in every artefact (package version plus git commit when known), the
versions of the libraries its numbers depend on, and the platform that made it (CPU model and
matmul features, GPUs): the same code and packages give the same figures to the digit on the same
CPU kind, and only within the seed spread on another (float reductions run in another order)."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from factory import __version__


@functools.cache
def code_version() -> str:
    """``facefactory <version>`` plus ``git <sha>`` (``-dirty`` with uncommitted changes).

    Outside a git checkout (an installed wheel, a Ray job's uploaded working dir) the package
    version alone is returned; ``FACEFACTORY_CODE_VERSION`` overrides both, for images built in CI.
    """
    if override := os.environ.get("FACEFACTORY_CODE_VERSION"):
        return override
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = _git(root, "rev-parse", "HEAD")
        dirty = "-dirty" if _git(root, "status", "--porcelain", "--untracked-files=no") else ""
        return f"facefactory {__version__} git {sha[:12]}{dirty}"
    except (OSError, subprocess.CalledProcessError):
        return f"facefactory {__version__}"


def _git(root: str, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", root, *args], check=True, capture_output=True, text=True, timeout=10
    ).stdout.strip()


RECORDED_PACKAGES = ("torch", "numpy", "opencv-python", "diffusers", "ray", "mlflow", "pyarrow",
                     "webdataset")
"""The libraries whose version can move a result: opencv-python 5.0 -> 5.1 resamples the
training augmentation differently and moved the quickstart's real-trained AVG by half a point."""


@functools.cache
def package_versions() -> dict[str, str]:
    """``{package: version}`` of :data:`RECORDED_PACKAGES` as installed here (absent ones left
    out), recorded beside the code version in saved configs, manifests and MLflow runs."""
    found = {}
    for name in RECORDED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


CPUINFO = "/proc/cpuinfo"
MATMUL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
"""The ``/proc/cpuinfo`` flags that decide a CPU's float32 and bf16 matmul rates."""
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""Either makes bf16 autocast native on a CPU (oneDNN's bf16 kernels use them); without them
bf16 is emulated with float32 instructions."""


@dataclass
class CpuInfo:
    """A CPU as ``/proc/cpuinfo`` describes it; ``model`` and ``flags`` are None where that file
    is absent (not Linux) or says nothing (``model name`` missing, as on many ARM kernels)."""

    model: str | None
    flags: frozenset[str] | None

    @property
    def native_bf16(self) -> bool | None:
        """Whether bf16 autocast runs natively (None: unknown)."""
        if self.flags is None:
            return None
        return any(flag in self.flags for flag in NATIVE_BF16_FLAGS)


def cpu_info(path: str = CPUINFO) -> CpuInfo:
    """The first processor's ``model name`` and ``flags`` in ``path``."""
    try:
        with open(path) as stream:
            text = stream.read()
    except OSError:
        return CpuInfo(None, None)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if separator:
            fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags")
    return CpuInfo(fields.get("model name") or None,
                   frozenset(flags.split()) if flags is not None else None)


@functools.cache
def platform_record() -> dict[str, Any]:
    """This process's :func:`describe_platform`, recorded beside the code version in saved
    configs, manifests, checkpoints, results and MLflow runs."""
    return describe_platform()


def describe_platform(path: str = CPUINFO) -> dict[str, Any]:
    """Where this process runs: the CPU model (from ``path``), which of :data:`MATMUL_FLAGS` it
    has, whether bf16 autocast is native, the logical CPUs, the machine and OS, and the CUDA
    devices torch sees (none when torch is not imported yet or sees none: describing must not be
    what imports it)."""
    info = cpu_info(path)
    torch = sys.modules.get("torch")
    gpus = ([torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
            if torch is not None and torch.cuda.is_available() else [])
    return {"cpu": info.model or platform.processor() or "unknown",
            "matmul_features": [flag for flag in MATMUL_FLAGS
                                if info.flags is not None and flag in info.flags],
            "bf16_native": info.native_bf16,
            "cpus": os.cpu_count(),
            "machine": f"{platform.machine()}, {platform.system()} {platform.release()}",
            "gpus": gpus}


def platform_tags() -> dict[str, str]:
    """The platform as MLflow tags (``platform.cpu`` ...): tags rather than params because a run
    resumed on another machine must be able to say so, and MLflow params never change."""
    return {f"platform.{key}": (", ".join(value) if isinstance(value, list) else str(value))
            for key, value in platform_record().items()}


def platform_text(record: dict[str, Any]) -> str:
    """One line for tables and logs: ``AMD EPYC 9B14 (2 CPUs, bf16 native)`` plus the GPUs."""
    bf16 = {True: "bf16 native", False: "no native bf16", None: "bf16 unknown"}[
        record.get("bf16_native")]
    text = f"{record.get('cpu', 'unknown')} ({record.get('cpus')} CPUs, {bf16})"
    if record.get("gpus"):
        text += ", GPU: " + ", ".join(record["gpus"])
    return text
