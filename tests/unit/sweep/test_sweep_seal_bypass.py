"""The two ways past the sweep's seal that a security probe found (issue 33), each with a planted
pickle: Tune never unpickles a byte of the sweep's shared folder that this user's sweep did not
write there.

No Ray starts: the steps of ``run_sweep`` that need Ray, MLflow or data are replaced, and so is
Tune's restore, by one that does what Tune's does first (unpickle ``tuner.pkl`` from the folder it
is given). A fresh sweep's ``tune.Tuner`` is Tune's own: writing its state needs no Ray.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from ray import tune

from factory.cli import main
from factory.config import load_config
from factory.sweep import run as sweep_run
from factory.sweep import seal

SPACE = "sweep.space={recognizer.select.m: {grid: [[0.9, 1.0]]}}"


class Planted:
    """A pickle that creates ``marker`` when it is unpickled: what an attacker would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


class Restored(Exception):
    """Ends a run at its restore, with the folder restored from and the bytes unpickled."""


def restore_like_tune(path, *args, **kwargs):
    """What ``tune.Tuner.restore`` does first: unpickle ``tuner.pkl`` of the folder it is given."""
    data = Path(path, "tuner.pkl").read_bytes()
    pickle.loads(data)
    raise Restored(path, data)


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """A one-trial sweep under ``tmp_path``: its overrides and its shared folder, with the steps
    of ``run_sweep`` that would start Ray or MLflow replaced, and every ``fit`` interrupted."""
    monkeypatch.chdir(tmp_path)
    for name, step in {"check_validation": lambda config: [],
                       "init_ray": lambda *args: None,
                       "ensure_pool": lambda *args: "",
                       "_parent_run": lambda *args: "parent-run",
                       "concurrent_trials": lambda *args, **kwargs: 1,
                       "_fit": lambda tuner: ([], True)}.items():
        monkeypatch.setattr(sweep_run, name, step)
    monkeypatch.setattr(tune.Tuner, "restore", restore_like_tune)
    overrides = [f"workdir={tmp_path / 'work'}", SPACE]
    return overrides, tmp_path / "work" / "sweeps" / "sweep"


def run_interrupted(overrides: list[str]) -> None:
    with pytest.raises(KeyboardInterrupt):
        sweep_run.run_sweep(load_config(None, overrides))


def refusal(overrides: list[str], capsys) -> str:
    """The one line with which ``factory sweep`` (exit code 2) refuses to run."""
    capsys.readouterr()
    code = main(["sweep", *overrides])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def test_a_state_swapped_after_the_check_is_never_restored(sweep, tmp_path, monkeypatch, capsys):
    """Time of check vs time of use: ``tuner.pkl`` is swapped in the shared folder right after
    the seal is checked (while Ray, the pool and MLflow start), before Tune restores. The
    restore reads the private copy made as the seal was checked, so the planted bytes never
    run; they stay unsealed, so the next run refuses them."""
    overrides, shared = sweep
    marker = tmp_path / "pwned"
    run_interrupted(overrides)
    sealed = (shared / "tuner.pkl").read_bytes()
    monkeypatch.setattr(sweep_run, "check_validation", lambda config: (
        shared / "tuner.pkl").write_bytes(pickle.dumps(Planted(marker))))

    with pytest.raises(Restored) as restored:
        sweep_run.run_sweep(load_config(None, overrides))
    folder, unpickled = restored.value.args
    assert not marker.exists()
    assert unpickled == sealed and not Path(folder).is_relative_to(shared)
    assert not os.path.exists(folder)  # the private copy went with the run

    line = refusal(overrides, capsys)
    assert "changed since the sweep sealed it" in line and "tuner.pkl" in line
    assert not marker.exists()


def test_a_state_overwritten_while_the_sweep_runs_is_not_sealed(sweep, tmp_path, monkeypatch,
                                                                 capsys):
    """The victim sealing the attacker's file: ``tuner.pkl`` is overwritten in the shared folder
    while a sweep runs, during ``fit`` and again just before the sweep seals its state. The seal
    holds the bytes the sweep wrote, never the planted ones, so the next run of the same sweep
    refuses them before unpickling anything."""
    overrides, shared = sweep
    marker = tmp_path / "pwned"

    def plant() -> None:
        (shared / "tuner.pkl").write_bytes(pickle.dumps(Planted(marker)))

    def fit_under_attack(tuner):
        plant()
        return [], True

    key = seal.sweep_key
    with monkeypatch.context() as attack:
        attack.setattr(sweep_run, "_fit", fit_under_attack)
        attack.setattr(seal, "sweep_key", lambda: (plant(), key())[1])  # as the seal is made
        run_interrupted(overrides)

    line = refusal(overrides, capsys)
    assert "changed since the sweep sealed it" in line and "tuner.pkl" in line
    assert not marker.exists()
