"""Validation is not test: training reads the test benchmarks only at its final epoch, sweeps
select on validation metrics, stopped trials are never ranked against finished ones, and
settings repeated over seeds are compared as mean +- std."""

from __future__ import annotations

import os

import numpy as np
import pytest

from factory.config import load_config
from factory.errors import ConfigError, UserError
from factory.eval.benchmarks import EpochEvaluation, load_benchmarks
from factory.sweep.compare import (
    TrialRow,
    accuracy_curve_png,
    comparison_table,
    ranked,
    setting_summaries,
)


def pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32)


def test_training_reads_the_test_benchmarks_only_at_the_final_epoch(world):
    """The loader the training loop uses, instrumented: over a run of four epochs the test
    benchmark is read once, at the last, and no earlier epoch's metrics carry a test figure."""
    validation = [str(world / "faceworld" / "validation" / "val_tiny.bin")]
    test = [str(world / "faceworld" / "benchmarks" / "tiny.bin")]
    reads: list[tuple[int, str]] = []
    epoch = 0

    def loader(uris, size):
        reads.extend((epoch, uri) for uri in uris)
        return load_benchmarks(uris, size)

    evaluation = EpochEvaluation(validation, test, 32, loader=loader)
    history = []
    for epoch in range(4):
        metrics, results = evaluation.evaluate(pixels, final=epoch == 3)
        history.append(metrics)
    assert reads == [(0, validation[0]), (3, test[0])]
    for metrics in history[:3]:
        assert set(metrics) >= {"val_tiny/acc", "val_avg_acc"}
        assert not any(key.startswith("tiny/") or key == "avg_acc" for key in metrics)
    assert {"tiny/acc", "avg_acc", "val_avg_acc"} <= set(history[3])
    assert [r.name for r in results] == ["tiny"]  # the ROC of the final epoch is the test one


def row(name, status, m, seed, validation, test=None, epochs=20, gtr=None):
    return TrialRow(name=name, sweep="s", status=status,
                    swept={"recognizer.select.m": m, "recognizer.seed": seed},
                    accuracies={}, avg=test, gtr=gtr, epochs=epochs,
                    curve={"curve.m": sum(m) / 2}, validation=validation)


ROWS = [
    row("a0", "FINISHED", [0.9, 1.0], 0, 80.0, 78.0, gtr=5.0),
    row("a1", "FINISHED", [0.9, 1.0], 1, 82.0, 80.0, gtr=3.0),
    row("a2", "KILLED", [0.9, 1.0], 2, 95.0, epochs=8),   # stopped early: a high value, unranked
    row("b0", "FINISHED", [-0.1, 0.1], 0, 85.0, 83.0, gtr=0.0),
    row("b1", "FINISHED", [-0.1, 0.1], 1, 84.0, 81.0, gtr=2.0),
    row("b2", "FINISHED", [-0.1, 0.1], 2, 86.0, 82.0, gtr=1.0),
]


def test_stopped_trials_are_listed_apart_and_never_ranked():
    order = ranked(list(ROWS))
    assert [r.name for r in order] == ["b2", "b0", "b1", "a1", "a0", "a2"]  # by validation
    table = comparison_table(order)
    stopped = next(line for line in table.splitlines() if " a2 " in f" {line} ")
    assert stopped.split()[0] == "-" and "stopped after 8 epochs" in stopped
    assert next(line for line in table.splitlines() if " b2 " in f" {line} ").split()[0] == "1"


def test_settings_over_seeds_are_mean_and_std_of_their_finished_seeds(tmp_path):
    summaries = {s.label: s for s in setting_summaries(ROWS)}
    best, other = summaries["recognizer.select.m=[-0.1, 0.1]"], \
        summaries["recognizer.select.m=[0.9, 1]"]
    assert best.n == 3 and best.stopped == 0
    assert best.test == pytest.approx((82.0, 1.0)) and best.validation == pytest.approx((85.0, 1.0))
    assert other.n == 2 and other.stopped == 1  # the stopped seed is not averaged in
    assert other.test == pytest.approx((79.0, np.std([78.0, 80.0], ddof=1)))
    assert other.gtr == pytest.approx((4.0, np.std([5.0, 3.0], ddof=1)))
    assert list(summaries) == [best.label, other.label]  # best validation mean first
    table = comparison_table(ranked(list(ROWS)))
    assert "82.00 +- 1.00" in table and "79.00 +- 1.41" in table
    figure = accuracy_curve_png(ROWS, str(tmp_path / "curve.png"))
    assert figure and os.path.getsize(figure) > 0


def test_sweeps_select_on_validation_and_seeds_repeat_every_setting():
    from factory.sweep.space import seed_values, tune_space

    with pytest.raises(ConfigError, match="seeds sets recognizer.seed itself"):
        load_config(None, ["sweep.seeds=3", "sweep.space={recognizer.seed: {grid: [1, 2]}}"])
    config = load_config(None, ["sweep.seeds=3", "recognizer.seed=5",
                                "sweep.space={recognizer.select.m: {grid: [[0, 1]]}}"])
    assert config.sweep.metric == "val_avg_acc"
    space = tune_space(config.sweep.space, None, seed_values(config.recognizer.seed, 3))
    assert space["recognizer.seed"] == {"grid_search": [5, 6, 7]}
    assert "recognizer.seed" not in tune_space(config.sweep.space, None, [0])


def test_a_sweep_without_validation_benchmarks_or_on_a_test_metric_is_refused(world, tmp_path):
    from factory.sweep.run import check_validation

    base = [f"workdir={world}", "faceworld.benchmarks=[{name: tiny, identities: 20, pairs: 40}]"]
    with pytest.raises(UserError, match="selects on validation benchmarks and none were found"):
        check_validation(load_config(None, base))
    given = base + ["faceworld.validation_benchmarks=[{name: val_tiny, identities: 20, "
                    "pairs: 40}]"]
    assert check_validation(load_config(None, given))[0].endswith("validation/val_tiny.bin")
    assert check_validation(load_config(None, given + ["sweep.metric=val_tiny/acc"]))
    for test_metric in ("tiny/acc", "avg_acc"):
        with pytest.raises(UserError, match=f"'{test_metric}' is not a validation metric"):
            check_validation(load_config(None, given + [f"sweep.metric={test_metric}"]))
    test_bin = str(world / "faceworld" / "benchmarks" / "tiny.bin")
    with pytest.raises(UserError, match="tiny is also a test benchmark's name"):
        check_validation(load_config(None, base + [
            f"evaluate.validation_benchmarks=[{test_bin}]"]))


def test_the_quickstarts_gtr_says_what_it_compares():
    from factory.pipeline import gtr_line

    line = gtr_line(22.04, {"identities": 14, "synthetic_images": 224}, 12000, 1000)
    assert line.startswith("GtR (real-trained AVG - synthetic-trained AVG) = 22.04 points")
    assert "14 synthetic identities x 16 images (224 images) with 1000 real identities x 12 " \
           "images (12000 images)" in line
    assert "not CemiFace's volume-matched GtR" in line and "docs/experiments/README.md" in line
