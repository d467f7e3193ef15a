"""One writer per output (factory.locking): the lock file, its owner record, refusals, stale
locks, and the two commands the issue caught mixing outputs (synthesize and export), whose
second writer must be refused before it reads or writes anything. Nothing here starts Ray (the
lock on an object store, on moto's S3 server: tests/integration/test_locking.py)."""

from __future__ import annotations

import calendar
import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factory import locking
from factory.cli import MAX_ERROR_CHARS, main
from factory.errors import UserError
from factory.locking import LOCK_FILE, LockOwner, OutputLocked, hold_lock
from helpers import REPO

HOLDER = """
import sys, time
from factory.locking import hold_lock
with hold_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""
"""A process that takes the lock of ``argv[1]`` for the command ``argv[2]`` and keeps it."""


@contextlib.contextmanager
def held_elsewhere(folder: Path, command: str):
    """Another process holding the lock of ``folder``, while the block runs."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), command],
                               stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def plant(folder: Path, **changes) -> LockOwner:
    """A lock in ``folder`` recording this process as owner, with ``changes`` made to it."""
    owner = dataclasses.replace(locking._this_process("synthesize"), **changes)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_bytes(locking._record(owner))
    return owner


def recorded(folder: Path) -> dict:
    return json.loads((folder / LOCK_FILE).read_text())


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


# -- the lock ----------------------------------------------------------------------------------

def test_the_lock_file_records_its_owner_while_held_and_goes_after(tmp_path):
    before = time.time()
    with hold_lock(str(tmp_path), "synthesize"):
        record = recorded(tmp_path)
    assert os.listdir(tmp_path) == []
    assert (record["host"], record["pid"], record["command"]) == \
        (socket.gethostname(), os.getpid(), "synthesize")
    started = calendar.timegm(time.strptime(record["started"], "%Y-%m-%dT%H:%M:%SZ"))
    # whole seconds, and a CI machine's wall clock can be stepped back a little mid-test
    assert before - 5 <= started <= time.time() + 5
    assert len(record["token"]) == 32
    if os.path.exists("/proc/self/stat"):  # Linux: what tells a reused pid from the owner
        assert record["boot"] and record["pid_namespace"].startswith("pid:")
        assert record["process_start"] == locking._proc_stat(os.getpid())[1]


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    with hold_lock(str(tmp_path), "synthesize"):
        first = (tmp_path / LOCK_FILE).read_bytes()
        with pytest.raises(OutputLocked) as refused:
            with hold_lock(str(tmp_path), "export"):
                pytest.fail("a second writer got the lock")
        assert (tmp_path / LOCK_FILE).read_bytes() == first
    owner = json.loads(first)
    assert isinstance(refused.value, UserError)
    assert str(refused.value) == (
        f"{tmp_path}: being written by factory synthesize, pid {os.getpid()} on host "
        f"{socket.gethostname()} since {owner['started']}; wait until it ends, or write elsewhere")


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_the_lock_goes_on_an_exception_and_on_ctrl_c(tmp_path, error):
    with pytest.raises(error):
        with hold_lock(str(tmp_path), "export"):
            assert (tmp_path / LOCK_FILE).exists()
            raise error
    assert not (tmp_path / LOCK_FILE).exists()
    with hold_lock(str(tmp_path), "export"):
        pass


def test_a_lock_of_a_dead_process_of_this_host_is_taken_over_saying_so(tmp_path, capsys):
    stale = plant(tmp_path, pid=dead_pid())
    with hold_lock(str(tmp_path), "export"):
        record = recorded(tmp_path)
    assert (record["pid"], record["command"]) == (os.getpid(), "export")
    assert capsys.readouterr().err == (
        f"{tmp_path}: took over the stale lock of factory synthesize, pid {stale.pid} on host "
        f"{stale.host} since {stale.started}: that process is no longer running\n")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux's /proc")
def test_a_running_process_that_reused_the_owners_pid_is_not_the_owner(tmp_path, capsys):
    parent = os.getppid()
    plant(tmp_path, pid=parent, process_start=locking._proc_stat(parent)[1])
    with pytest.raises(OutputLocked, match=f"pid {parent} on host"):
        with hold_lock(str(tmp_path), "export"):
            pass
    plant(tmp_path, pid=parent, process_start=locking._proc_stat(parent)[1] - 1)
    with hold_lock(str(tmp_path), "export"):
        pass
    assert "took over the stale lock" in capsys.readouterr().err


def test_a_lock_from_before_a_reboot_is_stale(tmp_path, capsys):
    plant(tmp_path, pid=os.getppid(), boot="another-boot")
    with hold_lock(str(tmp_path), "export"):
        pass
    assert "took over the stale lock" in capsys.readouterr().err


@pytest.mark.parametrize("elsewhere", [{"host": "elsewhere"}, {"pid_namespace": "pid:[1]"}],
                         ids=["another host", "another pid namespace"])
def test_a_lock_that_cannot_be_checked_here_is_refused_naming_the_file(tmp_path, elsewhere):
    owner = plant(tmp_path, pid=dead_pid(), **elsewhere)
    with pytest.raises(OutputLocked) as refused:
        with hold_lock(str(tmp_path), "export"):
            pass
    assert str(refused.value) == (
        f"{tmp_path}: being written by {owner.describe()}, which cannot be checked from this "
        f"host; if that process has ended, remove {tmp_path / LOCK_FILE} and run again")
    assert recorded(tmp_path) == dataclasses.asdict(owner)


def test_a_lock_file_that_is_not_a_lock_record_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(locking, "UNREADABLE_SECONDS", 0.2)
    (tmp_path / LOCK_FILE).write_text('{"host": "h"}')
    with pytest.raises(OutputLocked, match=f"{tmp_path / LOCK_FILE}: a lock file that is not a "
                                           f"factory lock record; if no factory command is "
                                           f"writing {tmp_path}, remove it"):
        with hold_lock(str(tmp_path), "export"):
            pass
    assert (tmp_path / LOCK_FILE).read_text() == '{"host": "h"}'


def test_folders_the_lock_created_go_with_it_unless_something_was_written(tmp_path):
    with hold_lock(str(tmp_path / "a" / "b"), "export"):
        assert (tmp_path / "a" / "b" / LOCK_FILE).exists()
    assert os.listdir(tmp_path) == []
    with hold_lock(str(tmp_path / "a" / "b"), "export"):
        (tmp_path / "a" / "b" / "export.json").write_text("{}")
    assert os.listdir(tmp_path / "a" / "b") == ["export.json"]


def test_a_folder_and_one_inside_it_lock_apart(tmp_path):
    """A sweep holds its folder while its trials, in other processes, lock their recognizer
    runs and datasets below it (trials/<trial>, data/<trial>): no trial waits on the sweep."""
    sweep = tmp_path / "sweeps" / "sweep"
    with hold_lock(str(sweep), "sweep"):
        for below in ("trials/trial_0", "data/trial_0"):
            with held_elsewhere(sweep / below, "train-recognizer"):
                assert recorded(sweep / below)["command"] == "train-recognizer"
        assert recorded(sweep)["pid"] == os.getpid()


def test_a_sweep_restores_what_it_sealed_while_it_holds_its_folders_lock(tmp_path):
    """The seal refuses a file at the top of the sweep's folder that it does not list, unless it
    is one of the sweep's own files: the lock is one, so a rerun holding it still restores."""
    from factory.sweep.run import SWEEP_FILES
    from factory.sweep.seal import copy_sealed, publish

    private, shared, restored = tmp_path / "private", tmp_path / "shared", tmp_path / "restored"
    (private / "trial_0").mkdir(parents=True)
    (private / "tuner.pkl").write_bytes(b"tune state")
    (private / "trial_0" / "result.json").write_text("{}")
    publish(str(private), str(shared))
    with hold_lock(str(shared), "sweep"):
        copy_sealed(str(shared), str(restored), SWEEP_FILES)
    assert (restored / "tuner.pkl").read_bytes() == b"tune state"


RACER = """
import os, sys, time
from factory.locking import OutputLocked, hold_lock
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
try:
    with hold_lock(sys.argv[1], "race"):
        print("held", flush=True)
        time.sleep(3)
except OutputLocked:
    print("refused", flush=True)
"""
"""Waits for the file ``argv[2]``, then tries to take the lock of ``argv[1]`` for 3 s."""


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "over a stale lock"])
def test_of_processes_racing_for_one_lock_exactly_one_gets_it(tmp_path, stale):
    out, go = tmp_path / "out", tmp_path / "go"
    if stale:
        plant(out, pid=dead_pid())
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(out), str(go)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=REPO) for _ in range(4)]
    for racer in racers:
        assert racer.stdout.readline().strip() == "ready"
    go.touch()
    results = [racer.communicate(timeout=60) for racer in racers]
    outcomes = [stdout.strip() for stdout, _ in results]
    assert sorted(outcomes) == ["held", "refused", "refused", "refused"], results
    for outcome, (_, err) in zip(outcomes, results):  # only the winner says it took over
        assert ("took over the stale lock" in err) <= (outcome == "held"), results
    assert not out.exists() or os.listdir(out) == []


# -- the commands ------------------------------------------------------------------------------

def assert_refused_by(argv: list[str], holder: subprocess.Popen, out: Path, root: Path,
                      capsys) -> None:
    """The command exits 2 with one line naming ``holder``, and every file under ``root`` is as
    it was, no file added."""
    before = snapshot(root)
    owner = recorded(out)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert len(lines[0]) <= MAX_ERROR_CHARS
    assert lines[0] == (f"factory {argv[0]}: error: {out}: being written by factory {argv[0]}, "
                        f"pid {holder.pid} on host {socket.gethostname()} since "
                        f"{owner['started']}; wait until it ends, or write elsewhere")
    assert snapshot(root) == before == {f"out/{LOCK_FILE}": before[f"out/{LOCK_FILE}"]}


def test_a_second_synthesis_of_one_output_is_refused_before_it_reads_anything(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    with held_elsewhere(out, "synthesize") as holder:
        assert_refused_by(["synthesize", f"workdir={tmp_path / 'work'}", f"synthesis.out={out}",
                           f"synthesis.inquiry.data={tmp_path / 'inquiry'}",
                           f"runtime.mlflow_tracking_uri=sqlite:///{tmp_path}/mlflow.db"],
                          holder, out, tmp_path, capsys)


def test_a_second_export_into_one_out_is_refused_before_it_reads_anything(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, source = tmp_path / "out", tmp_path / "source"
    source.mkdir()
    with held_elsewhere(out, "export") as holder:
        assert_refused_by(["export", str(source), "--format", "rec", "--out", str(out)],
                          holder, out, tmp_path, capsys)
