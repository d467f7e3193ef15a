"""MLflow on PostgreSQL, for real: a PostgreSQL server on loopback in a temporary folder, an
``mlflow server`` on it, and sweeps whose trials log to it at the same time; ``factory compare``
reads them back, and a sweep that loses PostgreSQL half-way stops with one line and resumes when
it is rerun.

The server binaries come from the ``pgserver`` wheel that ``.[dev]`` installs (PostgreSQL 16 on
Linux x86-64, Python 3.10 to 3.12), else from Debian's ``postgresql`` package
(``/usr/lib/postgresql/<major>/bin``); the driver is psycopg 3 (``.[postgres]``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from factory.cli import main
from factory.config import load_config
from factory.sweep.run import run_sweep
from .test_sweep import pool, sweep_overrides  # noqa: F401 (pool is a fixture)

DATABASE = "mlflow"
ROLE = "mlflow"
PASSWORD = "pg-test-secret"
SERVER_USER = "nobody"
"""Who runs PostgreSQL when the tests run as root: the server refuses to run as root."""
READY_SECONDS = 60
MLFLOW_READY_SECONDS = 240
"""``mlflow server`` creates its schema on first start: about a minute on two busy cores."""
SWEEP_SECONDS = 600


def postgres_bindir() -> Path | None:
    """The folder holding ``postgres`` and ``initdb``: the pgserver wheel's, else Debian's
    newest; None when neither is installed."""
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        bindir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
        if (bindir / "postgres").is_file():
            return bindir
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                    key=lambda path: int(path.parent.parent.name))
    return debian[-1].parent if debian else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def end_group(process: subprocess.Popen, first: signal.Signals) -> None:
    """Send ``first`` to the process's session, then SIGKILL what is left of it after 20 s
    (a server under load can outlast a SIGTERM)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, first)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _open_to_all(path: Path) -> bool:
    """Whether any user may run ``path``: it and every folder above it are executable by
    others."""
    return all(part.stat().st_mode & stat.S_IXOTH for part in (path, *path.parents))


def _copy_of_pgserver(bindir: Path, target: Path) -> Path:
    """A copy in ``target`` of the pgserver wheel's PostgreSQL (``bindir`` is its
    ``pgserver/pginstall/bin``), laid out as in site-packages: the binaries find lib/ and share/
    beside bin/, and libpq in ``pgserver.libs`` beside the package. Debian's binaries never
    need one: they are in /usr/lib, open to every user."""
    installed = bindir.parent
    copy = target / "pgserver" / installed.name
    shutil.copytree(installed, copy, ignore=shutil.ignore_patterns("include"))
    shutil.copytree(installed.parent.parent / "pgserver.libs", target / "pgserver.libs")
    return copy / "bin"


class PostgresServer:
    """A PostgreSQL server of this test run's own: data, socket and log in ``root``, TCP on
    127.0.0.1 only, password (SCRAM) authentication over TCP. :meth:`kill` ends it as a crash
    would (SIGKILL to the postmaster and every backend); :meth:`start` starts it again on the
    same data and port, through PostgreSQL's crash recovery."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.root, self.port = root, _free_port()
        self.data, self.log = root / "data", root / "postgres.log"
        self.as_user: dict = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVER_USER)
            self.as_user = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
            os.chown(root, user.pw_uid, user.pw_gid)
            if not _open_to_all(bindir / "postgres"):  # a checkout under /root, say
                bindir = _copy_of_pgserver(bindir, root / "install")
        self.bindir = bindir
        password_file = root / "password"
        password_file.write_text(PASSWORD + "\n")
        if self.as_user:
            os.chown(password_file, self.as_user["user"], self.as_user["group"])
        self._run("initdb", "-D", str(self.data), "-U", ROLE, f"--pwfile={password_file}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        password_file.unlink()
        self.process: subprocess.Popen | None = None
        self.start()
        self._run("createdb", "-h", str(root), "-p", str(self.port), "-U", ROLE, DATABASE)
        self.version = self._run("psql", "-h", str(root), "-p", str(self.port), "-U", ROLE,
                                 "-d", DATABASE, "-tAc", "select version()").strip()

    def uri(self, password: str = PASSWORD) -> str:
        """The SQLAlchemy URI of the database, psycopg 3 as the driver."""
        return f"postgresql+psycopg://{ROLE}:{password}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, program: str, *args: str) -> str:
        result = subprocess.run([str(self.bindir / program), *args], capture_output=True,
                                text=True, cwd=self.root, timeout=120, **self.as_user)
        assert result.returncode == 0, f"{program}: {result.stderr}"
        return result.stdout

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-h", "127.0.0.1",
                 "-p", str(self.port), "-k", str(self.root), "-c", "fsync=off"],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                **self.as_user)
        deadline = time.monotonic() + READY_SECONDS
        while subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p",
                              str(self.port)], capture_output=True).returncode != 0:
            assert self.process.poll() is None and time.monotonic() < deadline, \
                self.log.read_text()[-2000:]
            time.sleep(0.2)

    def kill(self) -> None:
        end_group(self.process, signal.SIGKILL)

    def stop(self) -> None:
        end_group(self.process, signal.SIGINT)  # PostgreSQL's fast shutdown


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries: `pip install -e .[dev]` brings the pgserver "
                    "wheel (Linux x86-64, Python < 3.13), or `apt-get install postgresql`")
    # Not under pytest's basetemp, which only its owner may enter: when the tests run as root
    # the server runs as another user, who must reach its data folder.
    with tempfile.TemporaryDirectory(prefix="facefactory-postgres-") as root:
        server = PostgresServer(bindir, Path(root))
        yield server
        server.stop()


@pytest.fixture(scope="module")
def mlflow_on_postgres(postgres, tmp_path_factory) -> Iterator[str]:
    """``mlflow server`` on loopback with its runs in PostgreSQL; its tracking URI. One server
    process (uvicorn gives up on a second one that starts slowly on two busy cores), which
    serves requests on several threads, each with its own database connection."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    with open(folder / "mlflow.log", "w") as log:
        server = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--host",
             "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", postgres.uri(),
             "--artifacts-destination", str(folder / "artifacts")],
            cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + MLFLOW_READY_SECONDS
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, \
                (folder / "mlflow.log").read_text()[-3000:]
            time.sleep(1)
    yield uri
    end_group(server, signal.SIGTERM)


def trial_runs(uri: str, sweep: str) -> list:
    return mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("sweeps").experiment_id],
        filter_string=f"tags.`facefactory.sweep` = '{sweep}'")


def finished_rows(table: str) -> int:
    """The trial rows of ``factory compare``'s table whose state is finished."""
    return sum(line.rstrip().endswith(" finished") for line in table.splitlines())


def concurrent_overrides(world, pool, tmp_path, name: str, uri: str, *extra: str) -> list[str]:
    """The tiny sweep of tests/test_sweep.py (two m ranges, one trial each) on ``uri``, its
    trials small enough that both run at once on two CPUs (0.1 + 0.5 CPUs each)."""
    return sweep_overrides(world, pool, tmp_path, name, f"runtime.mlflow_tracking_uri={uri}",
                           "recognizer.workers.cpus_per_worker=0.5", *extra)


def test_a_refused_database_login_is_one_line_without_the_password(postgres, capsys,
                                                                    monkeypatch):
    import mlflow.store.db.utils

    # MLflow tries a database ten times over about 100 s before it gives up; once here
    monkeypatch.setattr(mlflow.store.db.utils, "MAX_RETRY_COUNT", 1)
    wrong = postgres.uri(password="not-the-password")
    code = main(["compare", f"runtime.mlflow_tracking_uri={wrong}"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(
        f"factory compare: error: MLflow tracking store postgresql+psycopg://{ROLE}:***@"
        f"127.0.0.1:{postgres.port}/{DATABASE} unavailable: ")
    assert 'password authentication failed for user "mlflow"' in lines[0]
    assert "not-the-password" not in err


def test_trials_log_at_once_to_postgresql_and_losing_it_mid_sweep_is_one_line_and_resumes(
        ray_two_cpus, world, pool, postgres, mlflow_on_postgres, tmp_path, capsys):
    """Two trials log to MLflow on PostgreSQL at once. PostgreSQL is killed once both have
    started their MLflow runs: the sweep ends with exit code 2 and one line naming the tracking
    store (the failed trials are one line each too, without their tracebacks); with PostgreSQL
    back, the same sweep again finishes both trials in those same runs, nested under one parent,
    with no run added and no epoch missing; ``factory compare`` reads them back through the
    server and straight from the database alike."""
    print(f"\nPostgreSQL server: {postgres.version}")
    overrides = concurrent_overrides(world, pool, tmp_path, "lost-store", mlflow_on_postgres,
                                     "recognizer.optimizer.epochs=2")
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    # give up on the store after one retry instead of MLflow's four minutes
    env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1")
    with open(tmp_path / "stdout.log", "w") as out, open(tmp_path / "stderr.log", "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "factory.cli", "sweep", *overrides],
                                   env=env, stdout=out, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + SWEEP_SECONDS
        started: list = []
        while len(started) < 2:  # both runs exist with their params: the trials are training
            assert process.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "stderr.log").read_text()[-3000:]
            time.sleep(0.5)
            if mlflow.MlflowClient(mlflow_on_postgres).get_experiment_by_name("sweeps"):
                started = [run for run in trial_runs(mlflow_on_postgres, "lost-store")
                           if "swept.recognizer.select.m" in run.data.params]
        postgres.kill()
        code = process.wait(timeout=SWEEP_SECONDS)
    finally:
        if process.poll() is None:
            end_group(process, signal.SIGINT)
        if postgres.process.poll() is not None:
            postgres.start()
    stderr = (tmp_path / "stderr.log").read_text()
    print(f"\nPostgreSQL killed mid-sweep; the sweep's last line: {stderr.splitlines()[-1]}")
    errors = [line for line in stderr.splitlines() if line.startswith("factory sweep:")]
    assert code == 2 and len(errors) == 1 and errors[0] == stderr.splitlines()[-1], stderr[-3000:]
    assert errors[0].startswith(f"factory sweep: error: MLflow tracking store "
                                f"{mlflow_on_postgres} unavailable: ")
    assert errors[0].endswith("and rerun: finished work is kept and the run resumes")
    assert "TrackingStoreError" not in stderr  # the exception's name shows in tracebacks only

    outcome = run_sweep(load_config(None, overrides))
    assert outcome.trials == 2
    runs = trial_runs(mlflow_on_postgres, "lost-store")
    assert sorted(run.info.run_id for run in runs) == sorted(run.info.run_id for run in started)
    assert {run.info.status for run in runs} == {"FINISHED"}
    client = mlflow.MlflowClient(mlflow_on_postgres)
    parent = client.search_runs(
        [runs[0].info.experiment_id],
        filter_string="tags.`facefactory.sweep_parent` = 'lost-store'")
    assert len(parent) == 1
    assert {run.data.tags["mlflow.parentRunId"] for run in runs} == {parent[0].info.run_id}
    assert sorted(run.data.params["swept.recognizer.select.m"] for run in runs) == [
        "[-0.1, 0.1]", "[0.9, 1.0]"]
    assert all(0 <= run.data.metrics["tiny/acc"] <= 100 for run in runs)
    # both runs were open at once: each started before the other ended (if either had)
    ends = [run.info.end_time for run in started if run.info.end_time]
    assert max(run.info.start_time for run in started) < min(ends, default=float("inf"))
    # Every epoch is logged: the metrics go to MLflow before the epoch's checkpoint, so an
    # epoch the store did not take is trained again. (One whose checkpoint Ray Train had not
    # registered yet when the trial failed is logged twice, at the same step.)
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "val_avg_acc")
        assert sorted({m.step for m in history}) == [0, 1]
    capsys.readouterr()
    assert main(["compare", "--sweep", "lost-store", "--out", str(tmp_path / "compare"),
                 "runtime.experiment=sweeps",
                 f"runtime.mlflow_tracking_uri={mlflow_on_postgres}"]) == 0
    table = capsys.readouterr().out
    assert finished_rows(table) == 2 and "recognizer.select.m=[0.9, 1]" in table
    assert all(run.info.run_name in table for run in runs)
    # the same rows straight from the database, as a node with the driver could read them
    assert main(["compare", "--sweep", "lost-store", "--out", str(tmp_path / "compare"),
                 "runtime.experiment=sweeps", f"runtime.mlflow_tracking_uri={postgres.uri()}"]) == 0
    assert capsys.readouterr().out == table
