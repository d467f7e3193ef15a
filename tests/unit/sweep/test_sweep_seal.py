"""A sweep restores only the Tune state it sealed: a planted pickle never runs.

The two bypasses a security probe found (a file swapped after the check, a file the victim's
own seal blessed) are in ``test_sweep_seal_bypass.py``."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest

from factory.cli import main
from factory.errors import UserError
from factory.sweep.seal import KEY_ENV, SEAL_FILE, copy_sealed, publish, sweep_key
from .test_sweep_seal_bypass import Planted

OWN = ("sweep.json", "comparison.txt")
TUNE_FILES = {"tuner.pkl": b"tuner", "experiment_state-2025.json": b"{}",
              "basic-variant-state-2025.json": b"{}", ".validate_storage_marker": b"",
              "run_trial_0001/params.pkl": b"params", "run_trial_0001/result.json": b"{}"}
"""A private folder laid out like the Tune experiment of a one-trial sweep."""


def published(root: Path) -> Path:
    """The sweep's shared folder after a run: Tune's experiment, published from its private
    folder and sealed, beside the sweep's own files and a trial's recognizer run."""
    private = root / "private" / "sweep"
    for name, data in TUNE_FILES.items():
        (private / name).parent.mkdir(parents=True, exist_ok=True)
        (private / name).write_bytes(data)
    shared = root / "shared" / "sweep"
    (shared / "trials" / "run_trial_0001" / "final").mkdir(parents=True)
    (shared / "trials" / "run_trial_0001" / "final" / "recognizer.pt").write_bytes(b"weights")
    (shared / "sweep.json").write_text("{}")
    publish(str(private), str(shared))
    return shared


def copied(root: Path) -> dict[str, bytes]:
    """Every file of the private folder a restore copies the sealed state into, by name."""
    return {str(path.relative_to(root)): path.read_bytes()
            for path in root.rglob("*") if path.is_file()}


def test_the_sealed_state_is_copied_exactly_and_the_sweeps_own_files_may_change(tmp_path):
    shared = published(tmp_path)
    assert {name: (shared / name).read_bytes() for name in TUNE_FILES} == TUNE_FILES
    (shared / "sweep.json").write_text('{"parent_run_id": "x"}')
    (shared / "comparison.txt").write_text("table")
    (shared / "trials" / "run_trial_0001" / "final" / "metrics.json").write_text("{}")
    copy_sealed(str(shared), str(tmp_path / "restore" / "sweep"), OWN)
    assert copied(tmp_path / "restore" / "sweep") == TUNE_FILES


@pytest.mark.parametrize("change, match", [
    (lambda tune: (tune / "tuner.pkl").write_bytes(b"other"), "changed since"),
    (lambda tune: (tune / "experiment_state-2025.json").write_text("[]"), "changed since"),
    (lambda tune: (tune / "run_trial_0001" / "result.json").write_text("[]"), "result.json"),
    (lambda tune: (tune / "run_trial_0001" / "error.pkl").write_bytes(b"x"), "error.pkl"),
    (lambda tune: (tune / "experiment_state-2099.json").write_text("{}"), "2099"),
    (lambda tune: (tune / "searcher-state.pkl").write_bytes(b"x"), "searcher-state.pkl"),
    (lambda tune: (tune / "run_trial_0001" / "params.pkl").unlink(), "params.pkl"),
    (lambda tune: (tune / SEAL_FILE).unlink(), "without the sweep's seal"),
    (lambda tune: (tune / SEAL_FILE).write_text('{"files": {}, "hmac": "00"}'), "forged"),
])
def test_any_other_state_is_refused_before_it_is_read(tmp_path, change, match):
    shared = published(tmp_path)
    change(shared)
    with pytest.raises(UserError, match=match) as info:
        copy_sealed(str(shared), str(tmp_path / "restore" / "sweep"), OWN)
    assert f"remove {shared}" in str(info.value) and "\n" not in str(info.value)


def test_state_sealed_under_another_key_is_refused(tmp_path, monkeypatch):
    shared = published(tmp_path)
    monkeypatch.setenv(KEY_ENV, "someone else")
    with pytest.raises(UserError, match="another key"):
        copy_sealed(str(shared), str(tmp_path / "restore" / "sweep"), OWN)


def test_the_key_is_made_once_and_kept_private(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    key = sweep_key()
    path = tmp_path / "config" / "facefactory" / "sweep.key"
    assert len(key) == 32 and path.read_bytes() == key and sweep_key() == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_planted_tuner_pkl_is_refused_and_never_unpickled(tmp_path, capsys, monkeypatch):
    """The issue's attack: a pickle planted in the sweep's storage, then the sweep rerun."""
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Planted(marker))
    pickle.loads(payload)  # the payload works: unpickling it creates the marker
    assert marker.exists()
    marker.unlink()
    tune = tmp_path / "work" / "sweeps" / "sweep"
    tune.mkdir(parents=True)
    (tune / "tuner.pkl").write_bytes(payload)
    code = main(["sweep", f"workdir={tmp_path / 'work'}",
                 "sweep.space={recognizer.select.m: {grid: [[0.9, 1.0]]}}"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "without the sweep's seal" in lines[0] and f"remove {tune}" in lines[0]
    assert not marker.exists()
    assert (tune / "tuner.pkl").read_bytes() == payload
