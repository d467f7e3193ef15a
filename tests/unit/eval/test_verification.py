"""insightface's 10-fold verification protocol, TAR@FAR and ROC, on hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factory.eval.verification import (
    evaluate_pairs,
    flip_sum_embeddings,
    kfold_indices,
    l2_normalize,
    pair_distances,
    plot_roc,
    roc_curve,
    tar_at_far,
    ten_fold_accuracy,
)


def test_kfold_sizes_follow_sklearn_for_6000_pairs() -> None:
    folds = kfold_indices(6000)
    assert len(folds) == 10
    for f, (train, test) in enumerate(folds):
        assert np.array_equal(test, np.arange(600 * f, 600 * f + 600))
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(6000))
        assert len(train) == 5400


def test_kfold_sizes_follow_sklearn_for_7_items() -> None:
    # 7 = 3 * 2 + 1: the first 7 % 3 = 1 fold is one larger -> sizes 3, 2, 2
    tests = [test.tolist() for _, test in kfold_indices(7, n_folds=3)]
    assert tests == [[0, 1, 2], [3, 4], [5, 6]]
    # 7 = 2 * 3 + 1 with 2 folds: sizes 4, 3
    assert [test.tolist() for _, test in kfold_indices(7, n_folds=2)] == [[0, 1, 2, 3], [4, 5, 6]]
    # sklearn refuses more folds than items; so do we
    with pytest.raises(ValueError):
        kfold_indices(7)


def test_kfold_uneven_split_puts_extras_first() -> None:
    sizes = [len(test) for _, test in kfold_indices(6003)]
    assert sizes == [601, 601, 601] + [600] * 7


def test_ten_fold_accuracy_hand_computed_ties_and_strict_thresholds() -> None:
    thresholds = np.array([0.5, 1.0, 1.5, 2.0])
    # fold 0 = pairs 0..2 (5 pairs, 2 folds: sizes 3, 2), fold 1 = pairs 3..4
    distances = np.array([1.0, 0.9, 3.0, 0.5, 2.0])
    issame = np.array([False, True, True, True, False])
    # Fold 0, choosing on fold 1's pairs (0.5 same, 2.0 different):
    #   t=0.5: 0.5 < 0.5 is false -> the same pair is missed: 1/2
    #   t=1.0: 2/2;  t=1.5: 2/2;  t=2.0: 2.0 < 2.0 is false -> still 2/2
    #   three-way tie, the first maximum wins -> t = 1.0
    #   held out at 1.0: 1.0 (diff) rejected (strict) ok, 0.9 (same) ok, 3.0 (same) missed: 2/3
    #   (a "<=" rule would pick 0.5 and score 1/3; a last-maximum rule would pick 2.0: 1/3)
    # Fold 1, choosing on fold 0's pairs (1.0 diff, 0.9 same, 3.0 same):
    #   t=0.5: 1/3;  t=1.0: 1.0 rejected, 0.9 accepted: 2/3;  t=1.5: 1/3;  t=2.0: 1/3 -> t = 1.0
    #   held out at 1.0: 0.5 accepted, 2.0 rejected: 2/2
    accuracies, best = ten_fold_accuracy(distances, issame, thresholds, n_folds=2)
    assert np.allclose(accuracies, [2 / 3, 1.0])
    assert best.tolist() == [1.0, 1.0]


def _insightface_style(distances, issame, thresholds, n_folds):
    """An independent, loop-by-loop rendering of the protocol, for a randomised cross-check."""
    bounds = np.linspace(0, len(distances), n_folds + 1)  # only used for equal-size folds here
    accuracies = []
    for f in range(n_folds):
        test = np.arange(int(bounds[f]), int(bounds[f + 1]))
        train = np.setdiff1d(np.arange(len(distances)), test)
        scores = [np.mean((distances[train] < t) == issame[train]) for t in thresholds]
        chosen = thresholds[int(np.argmax(scores))]
        accuracies.append(np.mean((distances[test] < chosen) == issame[test]))
    return np.array(accuracies)


def test_ten_fold_accuracy_agrees_with_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    issame = rng.random(400) < 0.5
    distances = np.round(np.where(issame, rng.normal(1.0, 0.4, 400), rng.normal(1.6, 0.4, 400)), 2)
    thresholds = np.arange(0, 4, 0.01)
    accuracies, _ = ten_fold_accuracy(distances, issame)
    assert np.allclose(accuracies, _insightface_style(distances, issame, thresholds, 10))


def test_flip_sum_sums_raw_embeddings_before_normalising() -> None:
    calls = []

    def embed(batch: np.ndarray) -> np.ndarray:
        """(top-left pixel of channel 0, 1): norms and directions depend on the flip."""
        calls.append(len(batch))
        return np.stack([batch[:, 0, 0, 0].astype(np.float64), np.ones(len(batch))], axis=1)

    image = np.zeros((2, 2, 3), dtype=np.uint8)
    image[0, 0] = (3, 0, 9)  # top-left; channel 2 differs so a channel flip would show
    image[0, 1, 0] = 1  # top-right: becomes top-left under a horizontal (W) flip
    image[1, 0, 0] = 7  # bottom-left: would become top-left under a vertical flip
    images = np.stack([image] * 5)
    out = flip_sum_embeddings(embed, images, batch_size=2)
    # f(x) = (3, 1), f(flip x) = (1, 1); sum (4, 2) -> (2, 1) / sqrt(5) = (0.8944, 0.4472)
    # (averaging the normalised vectors would give (0.8507, 0.5257) instead)
    assert np.allclose(out, np.tile([2 / np.sqrt(5), 1 / np.sqrt(5)], (5, 1)))
    assert calls == [2, 2, 2, 2, 1, 1]  # each batch and its flip


def test_l2_normalize_and_pair_distances() -> None:
    unit = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0], [1.0, 0.0]]))
    assert np.allclose(unit, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
    # pair 0: (0.6, 0.8) vs (0, 0): 0.36 + 0.64 = 1; pair 1: (0, -1) vs (1, 0): 1 + 1 = 2
    assert np.allclose(pair_distances(unit), [1.0, 2.0])
    with pytest.raises(ValueError):
        pair_distances(unit[:3])


def test_tar_at_far_picks_the_loosest_threshold_within_the_far() -> None:
    negatives = 1.0 + np.arange(1000) / 1024  # sorted: 1, 1 + 1/1024, 1 + 2/1024, ...
    positives = np.array([0.5, 1.0, 1.0 + 0.5 / 1024, 1.0 + 1 / 1024, 1.5])
    distances = np.concatenate([negatives, positives])
    issame = np.concatenate([np.zeros(1000, bool), np.ones(5, bool)])
    tars = tar_at_far(distances, issame, fars=(1e-4, 1e-3, 2e-3, 1.0))
    # 1e-4: floor(0.1) = 0 false accepts: threshold 1.0 -> only 0.5 passes: 1/5
    # 1e-3: 1 false accept: threshold 1 + 1/1024 -> 0.5, 1.0, 1 + 0.5/1024 pass: 3/5
    # 2e-3: 2 false accepts: threshold 1 + 2/1024 -> also 1 + 1/1024: 4/5
    # 1.0: every negative may pass: infinite threshold, 1.5 passes too: 5/5
    assert tars == pytest.approx({1e-4: 0.2, 1e-3: 0.6, 2e-3: 0.8, 1.0: 1.0})


def test_tar_at_far_resolution_with_3000_negatives() -> None:
    negatives = np.arange(3000) / 1000  # 0, 0.001, 0.002, 0.003, ...
    positives = np.array([0.0, 0.0005, 0.0025, 0.0035])
    distances = np.concatenate([negatives, positives])
    issame = np.concatenate([np.zeros(3000, bool), np.ones(4, bool)])
    tars = tar_at_far(distances, issame)
    # 1e-4 * 3000 = 0.3 -> no false accept: threshold 0 -> nothing is < 0: TAR 0
    # 1e-3 * 3000 = 3 false accepts: threshold 0.003 -> 0, 0.0005, 0.0025 pass: 3/4
    assert tars == pytest.approx({1e-4: 0.0, 1e-3: 0.75})
    assert np.isnan(tar_at_far(positives, np.ones(4, bool))[1e-3])


def test_roc_curve_sweeps_every_distance() -> None:
    distances = np.array([0.1, 0.2, 0.3, 0.4])
    issame = np.array([True, False, True, False])
    fpr, tpr = roc_curve(distances, issame)
    # thresholds 0.1, 0.2, 0.3, 0.4, inf with "same" iff dist < threshold
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]


def _separable_embeddings(num_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Same pairs identical, different pairs orthogonal: distance 0 or 2, every fold perfect."""
    rng = np.random.default_rng(1)
    issame = rng.random(num_pairs) < 0.5
    rows = []
    for i, same in enumerate(issame):
        a = np.eye(2 * num_pairs)[2 * i]
        rows += [a, a if same else np.eye(2 * num_pairs)[2 * i + 1]]
    return np.array(rows), issame


def test_evaluate_pairs_and_summary() -> None:
    embeddings, issame = _separable_embeddings(40)
    result = evaluate_pairs(embeddings, issame, "toy")
    assert result.accuracy == 1.0 and result.accuracy_std == 0.0
    assert result.num_pairs == 40 and len(result.fold_accuracies) == 10
    summary = result.summary()
    assert summary["name"] == "toy"
    assert summary["acc"] == 1.0 and summary["acc_std"] == 0.0 and summary["num_pairs"] == 40
    assert summary["tar@far=1e-3"] == 1.0 and summary["tar@far=1e-4"] == 1.0
    assert all(type(v) in (str, int, float) for v in summary.values())
    json.dumps(summary)
    with pytest.raises(ValueError):
        evaluate_pairs(embeddings, issame[:-1], "toy")


def test_plot_roc_writes_a_png(tmp_path) -> None:
    embeddings, issame = _separable_embeddings(20)
    results = [evaluate_pairs(embeddings, issame, "a"), evaluate_pairs(embeddings, ~issame, "b")]
    path = plot_roc(results, str(tmp_path / "roc.png"))
    with open(path, "rb") as stream:
        assert stream.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_benchmark_of_one_kind_of_pair_has_null_tars_with_a_note() -> None:
    """All genuine (or all impostor) pairs: accuracy is defined, TAR@FAR is not; the summary
    says so in strict JSON instead of writing a bare NaN."""
    from factory.eval.benchmarks import accuracy_metrics

    embeddings, _ = _separable_embeddings(20)
    for issame in (np.ones(20, bool), np.zeros(20, bool)):
        result = evaluate_pairs(embeddings, issame, "one-kind")
        summary = result.summary()
        assert summary["tar@far=1e-3"] is None and summary["tar@far=1e-4"] is None
        assert "genuine and impostor" in summary["note"]
        json.dumps(summary, allow_nan=False)
        assert not any(key.startswith("one-kind/tar") for key in accuracy_metrics([result]))
    assert "note" not in evaluate_pairs(embeddings, _separable_embeddings(20)[1], "x").summary()
