"""CPU seconds each test costs, Ray's daemons and every other process it starts included.

Run (as root, or as a user who may make cgroups): ``.venv/bin/python bench/suite_cpu.py
[PYTEST ARGS]`` (default ``tests/integration``); ``--top N`` rows (default 40), ``--out FILE``
for the rows as JSON. The tests run one at a time (``-n 0``) in a cgroup of their own, and
each test's figure is the cgroup's CPU time over its setup, call and teardown.

Why: ``make test``'s time on two cores is its CPU time over two, and most of that CPU is spent
in processes the test process does not wait for (Ray's GCS, raylet, dashboard and agents, each
actor's process, an ``mlflow server``), which ``--durations`` and ``resource.getrusage`` never
see. A cgroup holds every process forked below it, whatever session it starts, so its counter
is the whole cost; and since it counts CPU time, not wall time, it reads the same on a machine
busy with other work (an experiment running beside it), which ``--durations`` does not. A test
made cheaper shows here first; the suite's time is measured idle (docs/benchmarks.md).

A module's fixtures are charged to the test that first asks for them (its Ray cluster, the
synthesis a module shares), and a cluster's idle daemons to whichever test runs while they
live, so read a module's tests together.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

USAGE_FILE_VARIABLE = "FACTORY_SUITE_CPU_USAGE_FILE"
ROWS_FILE_VARIABLE = "FACTORY_SUITE_CPU_ROWS_FILE"
CGROUP_V1 = Path("/sys/fs/cgroup/cpuacct")
CGROUP_V2 = Path("/sys/fs/cgroup")


def read_usage_seconds(path: str) -> float:
    """CPU seconds a cgroup has used: ``cpuacct.usage`` (v1, nanoseconds) or ``cpu.stat``'s
    ``usage_usec`` (v2, microseconds)."""
    text = Path(path).read_text()
    if path.endswith("cpu.stat"):
        fields = dict(line.split() for line in text.splitlines() if line.strip())
        return int(fields["usage_usec"]) / 1e6
    return int(text) / 1e9


def make_cgroup(name: str) -> tuple[Path, Path]:
    """A new cgroup (v1's cpuacct hierarchy where it is mounted, else v2's): its folder and its
    usage file. Exits with a one-line error where neither can be made."""
    if (CGROUP_V1 / "cpuacct.usage").exists():
        folder, usage = CGROUP_V1 / name, "cpuacct.usage"
    elif (CGROUP_V2 / "cgroup.controllers").exists():
        folder, usage = CGROUP_V2 / name, "cpu.stat"
    else:
        print(f"suite_cpu: error: no cgroup hierarchy with CPU accounting under {CGROUP_V2}",
              file=sys.stderr)
        sys.exit(2)
    try:
        folder.mkdir()
    except OSError as exc:
        print(f"suite_cpu: error: cannot make the cgroup {folder} ({exc.strerror}): run as root",
              file=sys.stderr)
        sys.exit(2)
    return folder, folder / usage


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """(Loaded into the tests' pytest by ``-p suite_cpu``.) Append the test's CPU seconds and
    wall seconds to the rows file."""
    usage_file = os.environ.get(USAGE_FILE_VARIABLE)
    if not usage_file:
        yield
        return
    cpu, wall = read_usage_seconds(usage_file), time.monotonic()
    yield
    row = {"test": item.nodeid, "cpu_s": read_usage_seconds(usage_file) - cpu,
           "wall_s": time.monotonic() - wall}
    with open(os.environ[ROWS_FILE_VARIABLE], "a") as rows:
        rows.write(json.dumps(row) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", help="write the rows here as JSON")
    args, pytest_args = parser.parse_known_args()
    folder, usage_file = make_cgroup(f"facefactory-suite-cpu-{os.getpid()}")
    rows_file = Path(f"/tmp/{folder.name}.rows")
    env = dict(os.environ, **{USAGE_FILE_VARIABLE: str(usage_file),
                              ROWS_FILE_VARIABLE: str(rows_file)},
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                           os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "suite_cpu",
               "-p", "no:cacheprovider", *(pytest_args or ["tests/integration"])]

    def join_cgroup() -> None:
        (folder / "cgroup.procs").write_text(str(os.getpid()))

    start = time.monotonic()
    code = subprocess.call(command, env=env, preexec_fn=join_cgroup)
    total = read_usage_seconds(str(usage_file))
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] \
        if rows_file.exists() else []
    rows_file.unlink(missing_ok=True)
    print(f"\n{len(rows)} tests: {total:.1f} CPU-s in all (collection and start-up included), "
          f"{time.monotonic() - start:.0f} s of wall time; pytest exit code {code}")
    print(f"{'CPU s':>7} {'wall s':>7}  test")
    for row in sorted(rows, key=lambda r: -r["cpu_s"])[:args.top]:
        print(f"{row['cpu_s']:7.1f} {row['wall_s']:7.1f}  {row['test']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"total_cpu_s": total, "rows": rows}, indent=1))
    for _ in range(30):  # Ray's daemons leave within seconds of the test process
        try:
            folder.rmdir()
            break
        except OSError:
            time.sleep(1)
    return code


if __name__ == "__main__":
    sys.exit(main())
