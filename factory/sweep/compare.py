"""``factory compare``: a sweep's trials side by side, read from MLflow alone.

Selection reads validation only: finished trials are ranked by their validation AVG
(``val_avg_acc``, what ASHA saw) and show their test AVG (evaluated once, at the final epoch)
and GtR beside it. Trials ASHA stopped are listed apart, as stopped, with the epochs they ran:
they never reached the final epoch, have no test figure and are never ranked against finished
ones. Settings repeated over seeds (``sweep.seeds``) are summarised as mean +- std over their
finished seeds, with n; the figure is the CemiFace curve, test AVG against the requested m (or
against the selected similarity, for a similarity-group study) with those error bars, one line
per setting of the other swept parameters.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from factory.config import FactoryConfig, load_yaml
from factory.errors import UserError
from factory.eval.benchmarks import TEST_AVERAGE, VALIDATION_AVERAGE
from factory.report import format_table
from factory.runtime import mlflow_tracking_uri
from factory.sweep.trial import CURVE_M, CURVE_SIMILARITY, SWEEP_TAG, SWEPT_PARAM_PREFIX

PARENT_TAG = "facefactory.sweep_parent"
"""MLflow tag on a sweep's parent run (its value: the sweep name)."""
REFERENCE_METRIC = "reference_avg_acc"
"""Metric of a sweep's parent run: the real-trained recognizer's AVG, the GtR reference."""
CURVE_KEYS = {CURVE_M: "recognizer.select.m", CURVE_SIMILARITY: "recognizer.select.similarity"}
SEED_KEY = "recognizer.seed"
"""The swept key ``sweep.seeds`` repeats settings over: settings are compared across it."""
CURVE_FILE = "accuracy_vs_m.png"
"""The accuracy-against-m figure, in ``factory compare --out`` and in a sweep's folder."""


@dataclass
class TrialRow:
    """One trial run as the comparison needs it."""

    name: str
    sweep: str
    status: str
    swept: dict[str, Any]
    accuracies: dict[str, float]
    avg: float | None
    """Test AVG: present only when the trial ran to its final epoch."""
    gtr: float | None
    epochs: int
    curve: dict[str, float] = field(default_factory=dict)
    validation: float | None = None
    """Validation AVG at the trial's last evaluated epoch (what selection reads)."""

    @property
    def finished(self) -> bool:
        """Ran every epoch and was tested: the only trials that are ranked."""
        return self.status == "FINISHED" and self.avg is not None

    @property
    def state(self) -> str:
        if self.finished:
            return "finished"
        if self.status == "KILLED":
            return f"stopped after {self.epochs} epochs"
        return self.status.lower()

    @property
    def setting(self) -> tuple[tuple[str, str], ...]:
        """The swept values other than the seed: trials with equal settings are repeats."""
        return tuple(sorted((key, _short(value)) for key, value in self.swept.items()
                            if key != SEED_KEY))


def _value(text: str) -> Any:
    """An MLflow param back to a value: ``"[0.9, 1.0]"`` -> ``[0.9, 1.0]`` (bounded, like a
    config: a shared tracking store is input too)."""
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def sweep_rows(experiment: str, sweep: str | None = None) -> list[TrialRow]:
    """The trial runs of ``experiment`` (of sweep ``sweep`` only, when given), best AVG first."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):]):
        raise UserError(f"{uri[len('sqlite:///'):]}: no MLflow database there (set "
                        "MLFLOW_TRACKING_URI or runtime.mlflow_tracking_uri)")
    if mlflow.get_experiment_by_name(experiment) is None:
        raise UserError(f"MLflow experiment {experiment!r} not found at "
                        f"{mlflow.get_tracking_uri()}")
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list",
                              filter_string=f"tags.`{PARENT_TAG}` != ''", max_results=10000)
    references = {run.data.tags[PARENT_TAG]: run.data.metrics.get(REFERENCE_METRIC)
                  for run in runs}
    trials = mlflow.search_runs(experiment_names=[experiment], output_format="list",
                                filter_string=f"tags.`{SWEEP_TAG}` != ''", max_results=10000)
    rows = []
    for run in trials:
        name = run.data.tags[SWEEP_TAG]
        if sweep is not None and name != sweep:
            continue
        metrics, params = run.data.metrics, run.data.params
        avg = metrics.get(TEST_AVERAGE)
        reference = references.get(name)
        gtr = metrics.get("gtr", None if avg is None or reference is None else reference - avg)
        rows.append(TrialRow(
            name=run.info.run_name, sweep=name, status=run.info.status,
            swept={key[len(SWEPT_PARAM_PREFIX):]: _value(value) for key, value in params.items()
                   if key.startswith(SWEPT_PARAM_PREFIX)},
            accuracies={key[:-4]: value for key, value in metrics.items() if key.endswith("/acc")},
            avg=avg, gtr=gtr, epochs=int(metrics.get("epoch", -1)) + 1,
            curve={key: float(params[key]) for key in CURVE_KEYS if key in params},
            validation=metrics.get(VALIDATION_AVERAGE),
        ))
    if not rows:
        raise UserError(f"no sweep trial runs in MLflow experiment {experiment!r}"
                        + (f" for sweep {sweep!r}" if sweep else ""))
    return ranked(rows)


def ranked(rows: list[TrialRow]) -> list[TrialRow]:
    """Finished trials by validation AVG, best first; then every other trial (stopped,
    failed, running), unranked, by epochs run."""
    finished = sorted((row for row in rows if row.finished),
                      key=lambda row: -math.inf if row.validation is None else row.validation,
                      reverse=True)
    others = sorted((row for row in rows if not row.finished), key=lambda row: -row.epochs)
    return finished + others


@dataclass
class SettingSummary:
    """One setting (swept values other than the seed) over its finished seeds."""

    setting: tuple[tuple[str, str], ...]
    n: int
    validation: tuple[float, float] | None
    test: tuple[float, float] | None
    gtr: tuple[float, float] | None
    stopped: int
    curve: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.setting) or "all trials"


def _mean_std(values: list[float]) -> tuple[float, float] | None:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def setting_summaries(rows: list[TrialRow]) -> list[SettingSummary]:
    """Mean +- std of validation AVG, test AVG and GtR per setting, over its finished trials
    only (a stopped seed is counted apart, never averaged in); best validation mean first."""
    groups: dict[tuple, list[TrialRow]] = {}
    for row in rows:
        groups.setdefault(row.setting, []).append(row)
    summaries = []
    for setting, members in groups.items():
        done = [row for row in members if row.finished]
        summaries.append(SettingSummary(
            setting=setting, n=len(done),
            validation=_mean_std([r.validation for r in done if r.validation is not None]),
            test=_mean_std([r.avg for r in done if r.avg is not None]),
            gtr=_mean_std([r.gtr for r in done if r.gtr is not None]),
            stopped=len(members) - len(done), curve=members[0].curve))
    summaries.sort(key=lambda s: -math.inf if s.validation is None else s.validation[0],
                   reverse=True)
    return summaries


def _pm(value: tuple[float, float] | None) -> str:
    return "-" if value is None else f"{value[0]:.2f} +- {value[1]:.2f}"


def comparison_table(rows: list[TrialRow]) -> str:
    """Per setting: n finished seeds, validation AVG, test AVG and GtR as mean +- std, trials
    stopped; then every trial: finished ones ranked by validation AVG, stopped ones below."""
    summaries = setting_summaries(rows)
    settings = format_table(
        ["setting", "n", "validation AVG", "test AVG", "GtR", "stopped"],
        [[s.label, s.n, _pm(s.validation), _pm(s.test), _pm(s.gtr), s.stopped]
         for s in summaries])
    swept = sorted({key for row in rows for key in row.swept})
    benchmarks = sorted({key for row in rows for key in row.accuracies})
    headers = ["rank", "trial", *swept, *benchmarks, "val AVG", "test AVG", "GtR", "epochs",
               "state"]
    body = [[str(index + 1) if row.finished else "-", row.name,
             *(_short(row.swept.get(key)) for key in swept),
             *(row.accuracies.get(key) for key in benchmarks), row.validation, row.avg, row.gtr,
             row.epochs, row.state] for index, row in enumerate(rows)]
    return ("settings (mean +- std over finished seeds; selection on validation, test reported "
            "once at the final epoch)\n" + settings + "\n\ntrials (finished ranked by "
            "validation AVG; stopped trials are not ranked and have no test figure)\n"
            + format_table(headers, body))


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def accuracy_curve_png(rows: list[TrialRow], path: str) -> str | None:
    """Test AVG against requested m (else selected similarity), mean +- std over each setting's
    finished seeds as error bars, one line per setting of the other swept parameters; trials
    stopped early have no test figure and are only counted in the legend. None when no trial
    has either axis."""
    from factory.eval.generator_figures import agg_figure

    axis = next((key for key in CURVE_KEYS if any(key in row.curve for row in rows)), None)
    if axis is None:
        return None
    lines: dict[str, list[SettingSummary]] = {}
    for summary in setting_summaries([row for row in rows if axis in row.curve]):
        others = [(k, v) for k, v in summary.setting if k != CURVE_KEYS[axis]]
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in others)
        lines.setdefault(label or "all trials", []).append(summary)
    figure = agg_figure(6.5, 4.0)
    axes = figure.add_subplot()
    for label, members in sorted(lines.items()):
        members = sorted((s for s in members if s.test is not None),
                         key=lambda s: s.curve[axis])
        if not members:
            continue
        seeds = sorted({s.n for s in members})
        stopped = sum(s.stopped for s in lines[label])
        axes.errorbar([s.curve[axis] for s in members], [s.test[0] for s in members],
                      yerr=[s.test[1] for s in members], fmt="o-", capsize=3,
                      label=f"{label} (n={'/'.join(map(str, seeds))} finished"
                            + (f"; {stopped} stopped early, not shown)" if stopped else ")"))
    axes.set_xlabel("requested m (middle of the selected range)" if axis == CURVE_M
                    else "similarity to identity center (middle of the group)")
    axes.set_ylabel("test AVG verification accuracy (%)")
    sweeps = sorted({row.sweep for row in rows if axis in row.curve})
    axes.set_title(f"{', '.join(sweeps)}: accuracy against "
                   f"{'m' if axis == CURVE_M else 'similarity'} (mean +- std over seeds)",
                   fontsize=9)
    axes.legend(fontsize=7)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


@dataclass
class Comparison:
    """What ``factory compare`` shows: the table of trials and settings, and the figure's path
    (None: no trial has a curve axis)."""

    table: str
    figure: str | None


def compare_sweeps(config: FactoryConfig, experiment: str | None, sweep: str | None,
                   out: str) -> Comparison:
    """``factory compare``: the trials of ``sweep`` (None: of every sweep) in MLflow experiment
    ``experiment`` (None: ``runtime.experiment``) of the config's tracking store, as the table
    and the accuracy-against-m figure, written into the local folder ``out``."""
    import mlflow

    mlflow.set_tracking_uri(mlflow_tracking_uri(config.runtime))
    rows = sweep_rows(experiment or config.runtime.experiment, sweep)
    os.makedirs(out, exist_ok=True)
    figure = accuracy_curve_png(rows, os.path.join(out, CURVE_FILE))
    return Comparison(comparison_table(rows), figure)
