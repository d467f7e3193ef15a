"""A sweep restores only the Tune state it sealed: a planted pickle never runs."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest

from factory.cli import main
from factory.errors import UserError
from factory.sweep.seal import KEY_ENV, SEAL_FILE, check_seal, seal, sweep_key

OWN = ("sweep.json", "comparison.txt")


class Planted:
    """A pickle that creates ``marker`` when it is unpickled: what an attacker would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def experiment(root: Path) -> Path:
    """A folder laid out like a Tune experiment, with the sweep's own files beside it."""
    (root / "run_trial_0001" / "checkpoint_000000").mkdir(parents=True)
    for name, data in {"tuner.pkl": b"tuner", "experiment_state-2025.json": b"{}",
                       "basic-variant-state-2025.json": b"{}", "sweep.json": b"{}",
                       "run_trial_0001/params.pkl": b"params",
                       "run_trial_0001/result.json": b"{}",
                       "run_trial_0001/checkpoint_000000/recognizer.pt": b"weights"}.items():
        (root / name).write_bytes(data)
    return root


def test_sealed_state_passes_and_the_sweeps_own_files_may_change(tmp_path):
    tune = experiment(tmp_path / "sweep")
    seal(str(tune), OWN)
    (tune / "sweep.json").write_text('{"parent_run_id": "x"}')
    (tune / "comparison.txt").write_text("table")
    (tune / "run_trial_0001" / "result.json").write_text('{"epoch": 1}')
    check_seal(str(tune), OWN)


@pytest.mark.parametrize("change, match", [
    (lambda tune: (tune / "tuner.pkl").write_bytes(b"other"), "changed since"),
    (lambda tune: (tune / "experiment_state-2025.json").write_text("[]"), "changed since"),
    (lambda tune: (tune / "run_trial_0001" / "error.pkl").write_bytes(b"x"), "error.pkl"),
    (lambda tune: (tune / "searcher-state.pkl").write_bytes(b"x"), "searcher-state.pkl"),
    (lambda tune: (tune / "run_trial_0001" / "params.pkl").unlink(), "params.pkl"),
    (lambda tune: (tune / SEAL_FILE).unlink(), "without the sweep's seal"),
    (lambda tune: (tune / SEAL_FILE).write_text('{"files": {}, "hmac": "00"}'), "forged"),
])
def test_any_other_state_is_refused_before_it_is_read(tmp_path, change, match):
    tune = experiment(tmp_path / "sweep")
    seal(str(tune), OWN)
    change(tune)
    with pytest.raises(UserError, match=match) as info:
        check_seal(str(tune), OWN)
    assert f"remove {tune}" in str(info.value)


def test_state_sealed_under_another_key_is_refused(tmp_path, monkeypatch):
    tune = experiment(tmp_path / "sweep")
    seal(str(tune), OWN)
    monkeypatch.setenv(KEY_ENV, "someone else")
    with pytest.raises(UserError, match="another key"):
        check_seal(str(tune), OWN)


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
