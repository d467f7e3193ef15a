"""The unit tests' rule, checked: a unit test starts no Ray (nor any server; see tests/conftest.py
for what makes a test an integration test). `pytest tests/unit` is the quick check while
editing, so a Ray cluster started there, by a test or by anything it calls, is a bug in where the
test lives or in the code it calls.

How it is checked. Ray puts each cluster it starts in a session folder under its temp folder
(``$RAY_TMPDIR/ray/session_*``, else ``/tmp/ray``). ``/tmp/ray`` cannot tell who started a
session: a training in the background, or the integration tests of another pytest, start
clusters there at any moment. So every unit test runs with ``RAY_TMPDIR`` pointing at a folder of
this session's own, which a subprocess inherits as well: any session folder that appears there
was started by a unit test. A unit test that leaves one, or leaves Ray initialised in this
process, fails at its teardown, naming the rule; at the end, the session-scoped fixture
below fails the session if a session folder appeared there at any time (a subprocess that started
Ray after its test ended, say).

The variable is set around each unit test only (the hook wrappers below apply to the items under
this folder), never for the whole process: under ``make test`` the integration tests run in the
same processes and start their clusters where they always do.

Each unit test also runs with one torch thread. Their models are tiny, and on the two cores the
suite is sized for, torch's second thread only contends with whatever else runs there (the other
xdist worker of ``make test``, a training in the background): measured on a loaded 2-core
machine, tests/unit/models/test_generator_model.py took 65 s of CPU with two threads and 7 s
with one.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

RULE = ("unit tests start no Ray (tests/unit/conftest.py): a test that needs a Ray cluster, an "
        "MLflow, job or S3 server belongs in tests/integration/")

_ray_root: Path | None = None
"""This session's private Ray temp folder, made when the first unit test starts."""
_reported: set[str] = set()
"""The session folders a test has already been failed for."""
_saved_tmpdir: list[str | None] = []
"""RAY_TMPDIR as it was before the current unit test, put back after it."""
_saved_threads: list[int] = []
"""torch's thread count before the current unit test, put back after it."""


def _private_ray_root() -> Path:
    """This session's private Ray temp folder (made on first use)."""
    global _ray_root
    if _ray_root is None:
        # short, under the system's temp folder: Ray's Unix socket paths in the session folder
        # must stay under 108 bytes
        _ray_root = Path(tempfile.mkdtemp(prefix="unit-ray-"))
    return _ray_root


def ray_sessions(root: Path) -> set[str]:
    """The Ray session folders under the temp folder ``root`` (Ray's ``RAY_TMPDIR``), without
    Ray's ``session_latest`` link to the newest."""
    try:
        names = os.listdir(root / "ray")
    except FileNotFoundError:
        return set()
    return {name for name in names if name.startswith("session_") and name != "session_latest"}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    """Before the test's fixtures are made (module- and session-scoped ones included)."""
    _saved_tmpdir.append(os.environ.get("RAY_TMPDIR"))
    os.environ["RAY_TMPDIR"] = str(_private_ray_root())
    _saved_threads.append(torch.get_num_threads())
    torch.set_num_threads(1)
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """After the test's fixtures are torn down: put RAY_TMPDIR and torch's threads back, then
    check the rule."""
    try:
        return (yield)
    finally:
        saved = _saved_tmpdir.pop() if _saved_tmpdir else None
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        if _saved_threads:
            torch.set_num_threads(_saved_threads.pop())
        _check(item.nodeid)


def _check(nodeid: str) -> None:
    """Fail ``nodeid`` if it left Ray initialised in this process or a new session folder
    appeared in the private temp folder while it ran."""
    ray = sys.modules.get("ray")
    initialised = ray is not None and ray.is_initialized()
    if initialised:
        ray.shutdown()  # not into the next test
    new = ray_sessions(_private_ray_root()) - _reported
    _reported.update(new)
    if initialised or new:
        what = ["left Ray initialised in the test process"] if initialised else []
        if new:
            what.append(f"started a Ray cluster ({', '.join(sorted(new))} in "
                        f"{_private_ray_root() / 'ray'})")
        pytest.fail(f"{nodeid} {' and '.join(what)}: {RULE}", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def no_ray_in_unit_tests():
    """Fails the session, at its end, if any Ray session folder appeared in the private temp
    folder while the unit tests ran; removes the folder when none did."""
    yield
    root = _private_ray_root()
    sessions = ray_sessions(root)
    if sessions:
        pytest.fail(f"{len(sessions)} Ray cluster(s) started during the unit tests "
                    f"({', '.join(sorted(sessions))} in {root / 'ray'}): {RULE}", pytrace=False)
    shutil.rmtree(root, ignore_errors=True)
