"""``factory compare``: a sweep's trials side by side, read from MLflow alone.

The table lists every trial run of an experiment (or of one sweep) sorted by AVG, with GtR and
the swept parameters; the figure is the CemiFace curve, AVG accuracy against the requested m
(or against the selected similarity, for a similarity-group study), one line per setting of the
other swept parameters.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from factory.config import load_yaml
from factory.errors import UserError
from factory.report import format_table
from factory.sweep.trial import CURVE_M, CURVE_SIMILARITY, SWEEP_TAG, SWEPT_PARAM_PREFIX

PARENT_TAG = "facefactory.sweep_parent"
"""MLflow tag on a sweep's parent run (its value: the sweep name)."""
REFERENCE_METRIC = "reference_avg_acc"
"""Metric of a sweep's parent run: the real-trained recognizer's AVG, the GtR reference."""
CURVE_KEYS = {CURVE_M: "recognizer.select.m", CURVE_SIMILARITY: "recognizer.select.similarity"}


@dataclass
class TrialRow:
    """One trial run as the comparison needs it."""

    name: str
    sweep: str
    status: str
    swept: dict[str, Any]
    accuracies: dict[str, float]
    avg: float | None
    gtr: float | None
    epochs: int
    curve: dict[str, float] = field(default_factory=dict)


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
        avg = metrics.get("avg_acc")
        reference = references.get(name)
        gtr = metrics.get("gtr", None if avg is None or reference is None else reference - avg)
        rows.append(TrialRow(
            name=run.info.run_name, sweep=name, status=run.info.status,
            swept={key[len(SWEPT_PARAM_PREFIX):]: _value(value) for key, value in params.items()
                   if key.startswith(SWEPT_PARAM_PREFIX)},
            accuracies={key[:-4]: value for key, value in metrics.items() if key.endswith("/acc")},
            avg=avg, gtr=gtr, epochs=int(metrics.get("epoch", -1)) + 1,
            curve={key: float(params[key]) for key in CURVE_KEYS if key in params},
        ))
    if not rows:
        raise UserError(f"no sweep trial runs in MLflow experiment {experiment!r}"
                        + (f" for sweep {sweep!r}" if sweep else ""))
    rows.sort(key=lambda row: -math.inf if row.avg is None else row.avg, reverse=True)
    return rows


def comparison_table(rows: list[TrialRow]) -> str:
    """Trials by AVG: swept values, per-benchmark accuracy, AVG, GtR, epochs run, status."""
    swept = sorted({key for row in rows for key in row.swept})
    benchmarks = sorted({key for row in rows for key in row.accuracies})
    headers = ["trial", *swept, *benchmarks, "AVG", "GtR", "epochs", "status"]
    body = [[row.name, *(_short(row.swept.get(key)) for key in swept),
             *(row.accuracies.get(key) for key in benchmarks), row.avg, row.gtr, row.epochs,
             row.status] for row in rows]
    return format_table(headers, body)


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def accuracy_curve_png(rows: list[TrialRow], path: str) -> str | None:
    """AVG against requested m (else selected similarity), one line per setting of the other
    swept parameters; trials stopped early are hollow. None when no trial has either axis."""
    from factory.eval.generator_figures import agg_figure

    axis = next((key for key in CURVE_KEYS if any(key in row.curve for row in rows)), None)
    if axis is None:
        return None
    placed = [row for row in rows if axis in row.curve and row.avg is not None]
    groups: dict[str, list[TrialRow]] = {}
    for row in placed:
        others = {k: v for k, v in row.swept.items() if k != CURVE_KEYS[axis]}
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in sorted(others.items()))
        groups.setdefault(label or "all trials", []).append(row)
    finished = max((row.epochs for row in placed), default=0)
    figure = agg_figure(6.5, 4.0)
    axes = figure.add_subplot()
    for label, members in sorted(groups.items()):
        members.sort(key=lambda row: row.curve[axis])
        xs = [row.curve[axis] for row in members]
        line, = axes.plot(xs, [row.avg for row in members], "-", label=label)
        for row in members:
            stopped = row.epochs < finished
            axes.plot(row.curve[axis], row.avg, "o", color=line.get_color(),
                      markerfacecolor="none" if stopped else line.get_color())
    axes.set_xlabel("requested m (middle of the selected range)" if axis == CURVE_M
                    else "similarity to identity center (middle of the group)")
    axes.set_ylabel("AVG verification accuracy (%)")
    sweeps = sorted({row.sweep for row in placed})
    axes.set_title(f"{', '.join(sweeps)}: accuracy against "
                   f"{'m' if axis == CURVE_M else 'similarity'} (hollow: stopped early)",
                   fontsize=9)
    axes.legend(fontsize=8)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
