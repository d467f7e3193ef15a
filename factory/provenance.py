"""The code version recorded in every artefact (package version plus git commit when known) and
the versions of the libraries its numbers depend on."""

from __future__ import annotations

import functools
import os
import subprocess
from importlib import metadata

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
