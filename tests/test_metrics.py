"""Metrics, baseline, lift and the evaluation report, against values worked out by hand."""

from __future__ import annotations

import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn import metrics as skm

from pystock_training import config
from pystock_training.metrics import (
    LABEL_METRICS,
    PROBA_METRICS,
    PredictionCounts,
    Predictions,
    baseline_predictions,
    baseline_rows,
    classification_metrics,
    counted_metrics,
    evaluate_predictions,
    flatten,
    group_predictions,
    grouped_metrics,
    lift,
)
from pystock_training.plots import grouped_figures, weighted_calibration
from pystock_training.report import PLOTS, evaluation_report

ALL_METRICS = {
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
    "mcc",
    "roc_auc",
    "average_precision",
    "log_loss",
}

# Each case: y_true, y_pred, y_proba, and every metric worked out from the confusion matrix
# (TP, FP, TN, FN) and the ranking of the probabilities. MCC = (TP*TN - FP*FN) /
# sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); log loss = mean of -log(probability of the true class).
HAND_CASES = {
    # TP=2 FP=1 TN=1 FN=0; both positives outrank both negatives.
    "one_false_positive": (
        [0, 0, 1, 1],
        [0, 1, 1, 1],
        [0.1, 0.6, 0.7, 0.9],
        {
            "accuracy": 3 / 4,
            "precision": 2 / 3,
            "recall": 1.0,
            "f1": 0.8,
            "balanced_accuracy": (1 / 2 + 2 / 2) / 2,
            "mcc": (2 * 1 - 1 * 0) / math.sqrt(3 * 2 * 2 * 1),
            "roc_auc": 1.0,
            "average_precision": 1.0,
            "log_loss": -(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.9)) / 4,
        },
    ),
    # The same labels with truth and prediction swapped: TP=2 FP=0 TN=1 FN=1.
    "one_false_negative": (
        [0, 1, 1, 1],
        [0, 0, 1, 1],
        [0.2, 0.4, 0.6, 0.8],
        {
            "accuracy": 3 / 4,
            "precision": 1.0,
            "recall": 2 / 3,
            "f1": 0.8,
            "balanced_accuracy": (1 / 1 + 2 / 3) / 2,
            "mcc": (2 * 1 - 0 * 1) / math.sqrt(2 * 3 * 1 * 2),
            "roc_auc": 1.0,
            "average_precision": 1.0,
            "log_loss": -(math.log(0.8) + math.log(0.4) + math.log(0.6) + math.log(0.8)) / 4,
        },
    ),
    # TP=1 FP=1 TN=2 FN=1. Ranking 0.8(+) 0.5(-) 0.4(+) 0.3(-) 0.2(-): 5 of 6 pairs ordered;
    # precision at each positive 1/1 and 2/3, so AP = (1 + 2/3) / 2.
    "imperfect_ranking": (
        [1, 0, 1, 0, 0],
        [1, 0, 0, 1, 0],
        [0.8, 0.3, 0.4, 0.5, 0.2],
        {
            "accuracy": 3 / 5,
            "precision": 1 / 2,
            "recall": 1 / 2,
            "f1": 1 / 2,
            "balanced_accuracy": (1 / 2 + 2 / 3) / 2,
            "mcc": (1 * 2 - 1 * 1) / math.sqrt(2 * 2 * 3 * 3),
            "roc_auc": 5 / 6,
            "average_precision": (1 + 2 / 3) / 2,
            "log_loss": -(math.log(0.8) + math.log(0.7) + math.log(0.4) + math.log(0.5) + math.log(0.8)) / 5,
        },
    ),
    # Never predicts up: precision is 0 (not a warning or NaN) and MCC's denominator is 0, so 0.
    "never_up": (
        [0, 1, 0, 1],
        [0, 0, 0, 0],
        [0.2, 0.4, 0.1, 0.3],
        {
            "accuracy": 1 / 2,
            "precision": 0.0,
            "recall": 0.0,
            "f1": 0.0,
            "balanced_accuracy": 1 / 2,
            "mcc": 0.0,
            "roc_auc": 1.0,
            "average_precision": 1.0,
            "log_loss": -(math.log(0.8) + math.log(0.4) + math.log(0.9) + math.log(0.3)) / 4,
        },
    ),
}


@pytest.mark.parametrize("case", list(HAND_CASES))
def test_classification_metrics_by_hand(case: str) -> None:
    y_true, y_pred, y_proba, expected = HAND_CASES[case]

    scores = classification_metrics(np.array(y_true), np.array(y_pred), np.array(y_proba))

    assert set(scores) == ALL_METRICS
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, abs=1e-12), name
        assert type(scores[name]) is float, name


def test_metric_names_are_the_logged_names() -> None:
    assert set(config.METRIC_NAMES) == ALL_METRICS
    assert len(config.METRIC_NAMES) == len(ALL_METRICS)
    assert frozenset({"log_loss"}) == config.LOWER_IS_BETTER


def test_config_names_exactly_the_metrics_computed() -> None:
    # config holds the names so parameter checks need not import sklearn; they must not drift.
    assert (*LABEL_METRICS, *PROBA_METRICS) == config.METRIC_NAMES


def repeated_predictions(n_rows: int, n_values: int, seed: int) -> tuple[np.ndarray, ...]:
    """Predictions whose probabilities take few values, as a model of binary flags gives."""
    rng = np.random.default_rng(seed)
    values = rng.random(n_values)
    y_proba = values[rng.integers(0, n_values, n_rows)]
    y_true = (rng.random(n_rows) < y_proba).astype(np.int8)
    return y_true, (y_proba >= 0.5).astype(np.int8), y_proba


def test_merged_predictions_score_exactly_what_every_row_scores() -> None:
    y_true, y_pred, y_proba = repeated_predictions(20_000, 40, seed=0)
    merged = group_predictions(y_true, y_pred, y_proba)
    assert merged.weight is not None
    assert len(merged.y_true) <= 4 * 40
    assert merged.weight.sum() == len(y_true)

    scores = classification_metrics(y_true, y_pred, y_proba)

    # The reference is sklearn on every row, unmerged.
    expected = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        "precision": skm.precision_score(y_true, y_pred),
        "recall": skm.recall_score(y_true, y_pred),
        "f1": skm.f1_score(y_true, y_pred),
        "mcc": skm.matthews_corrcoef(y_true, y_pred),
        "roc_auc": skm.roc_auc_score(y_true, y_proba),
        "average_precision": skm.average_precision_score(y_true, y_proba),
        "log_loss": skm.log_loss(y_true, y_proba),
    }
    assert set(scores) == set(expected)
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_predictions_that_hardly_repeat_are_not_merged() -> None:
    rng = np.random.default_rng(1)
    y_proba = rng.random(1_000)
    y_true = (rng.random(1_000) < 0.5).astype(np.int8)
    merged = group_predictions(y_true, (y_proba >= 0.5).astype(np.int8), y_proba)
    assert merged.weight is None
    assert merged.y_proba is y_proba or np.array_equal(merged.y_proba, y_proba)


def test_truth_comes_first() -> None:
    truth, guess, proba = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9])

    right = classification_metrics(truth, guess, proba)
    swapped = classification_metrics(guess, truth, proba)

    assert (right["precision"], right["recall"]) == pytest.approx((2 / 3, 1.0))
    assert (swapped["precision"], swapped["recall"]) == pytest.approx((1.0, 2 / 3))


def test_probability_metrics_use_probabilities_not_labels() -> None:
    # Scored on the hard labels [0, 1, 1, 1] ROC AUC would be 0.75 (two tied pairs) and log loss
    # would blow up on the confident miss; on the probabilities it is a perfect ranking.
    y_true, y_pred, y_proba = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9])

    scores = classification_metrics(y_true, y_pred, y_proba)

    assert scores["roc_auc"] == 1.0
    assert scores["log_loss"] < 1.0


@pytest.mark.parametrize("y_true", [[1, 1, 1], [0, 0, 0, 0], [1]])
def test_single_class_truth_raises(y_true: list[int]) -> None:
    n = len(y_true)
    with pytest.raises(ValueError, match="single class"):
        classification_metrics(np.array(y_true), np.ones(n, dtype=int), np.full(n, 0.5))


@pytest.mark.parametrize(
    ("prior", "label"),
    [(0.3, 0), (0.7, 1), (0.49, 0), (0.5, 1), (0.0, 0), (1.0, 1)],
)
def test_baseline_predicts_the_majority_class_at_the_prior(prior: float, label: int) -> None:
    y_pred, y_proba = baseline_predictions(prior, 5)

    assert y_pred.tolist() == [label] * 5
    assert y_proba.tolist() == [prior] * 5
    assert y_pred.dtype == np.int8


@pytest.mark.parametrize(
    ("y_true", "prior"),
    [([0, 1, 1, 0, 1], 0.3), ([0, 1, 1, 0, 1], 0.7), ([1, 0, 0, 0], 0.55), ([0, 1, 0, 0, 0, 0, 0, 1], 0.2)],
)
def test_baseline_scores(y_true: list[int], prior: float) -> None:
    truth = np.array(y_true)
    positive_rate = sum(y_true) / len(y_true)

    scores = classification_metrics(truth, *baseline_predictions(prior, len(truth)))

    # A constant score ranks nothing: ROC AUC 0.5, and average precision is the positive rate.
    assert scores["roc_auc"] == pytest.approx(0.5)
    assert scores["average_precision"] == pytest.approx(positive_rate)
    expected_log_loss = -(positive_rate * math.log(prior) + (1 - positive_rate) * math.log(1 - prior))
    assert scores["log_loss"] == pytest.approx(expected_log_loss)
    majority = int(prior >= 0.5)
    assert scores["accuracy"] == pytest.approx(positive_rate if majority else 1 - positive_rate)
    assert scores["mcc"] == 0.0


@pytest.mark.parametrize("prior", [0.2, 0.5, 0.7])
@pytest.mark.parametrize("n_rows", [7, 20_000])  # unmerged and merged model rows
def test_baseline_built_from_label_counts_scores_as_the_full_baseline(prior: float, n_rows: int) -> None:
    y_true, y_pred, y_proba = repeated_predictions(n_rows, 40, seed=2)
    rows = group_predictions(y_true, y_pred, y_proba)
    assert (rows.weight is None) == (n_rows == 7)

    derived = grouped_metrics(baseline_rows(rows, prior))

    full = classification_metrics(y_true, *baseline_predictions(prior, n_rows))
    assert derived == pytest.approx(full, rel=1e-12, abs=1e-12)


def test_lift_is_positive_when_the_model_is_better() -> None:
    model = {"roc_auc": 0.6, "log_loss": 0.4, "accuracy": 0.5}
    baseline = {"roc_auc": 0.5, "log_loss": 0.6, "accuracy": 0.7}

    lifted = lift(model, baseline)

    assert lifted == pytest.approx({"roc_auc": 0.1, "log_loss": 0.2, "accuracy": -0.2})


def test_lift_of_a_worse_log_loss_is_negative() -> None:
    assert lift({"log_loss": 0.9}, {"log_loss": 0.7})["log_loss"] == pytest.approx(-0.2)


def test_evaluate_predictions_against_the_baseline_by_hand() -> None:
    y_true, y_pred, y_proba, expected = HAND_CASES["one_false_positive"]

    rows = group_predictions(np.array(y_true), np.array(y_pred), np.array(y_proba))
    results = evaluate_predictions(rows, prior=0.5)

    assert set(results) == {"model", "baseline", "lift"}
    assert results["model"]["roc_auc"] == pytest.approx(1.0)
    # prior 0.5 predicts "up" everywhere with probability 0.5: TP=2 FP=2 TN=0 FN=0.
    baseline = results["baseline"]
    assert baseline["accuracy"] == pytest.approx(0.5)
    assert baseline["precision"] == pytest.approx(0.5)
    assert baseline["recall"] == pytest.approx(1.0)
    assert baseline["roc_auc"] == pytest.approx(0.5)
    assert baseline["log_loss"] == pytest.approx(math.log(2))
    assert results["lift"]["roc_auc"] == pytest.approx(0.5)
    assert results["lift"]["log_loss"] == pytest.approx(math.log(2) - expected["log_loss"])
    assert results["lift"]["log_loss"] > 0
    assert results["lift"]["precision"] == pytest.approx(2 / 3 - 1 / 2)


def test_flatten_names() -> None:
    results = {
        "model": {"roc_auc": 0.7, "log_loss": 0.5},
        "baseline": {"roc_auc": 0.5, "log_loss": 0.69},
        "lift": {"roc_auc": 0.2, "log_loss": 0.19},
    }

    assert flatten(results) == {
        "roc_auc": 0.7,
        "log_loss": 0.5,
        "baseline_roc_auc": 0.5,
        "baseline_log_loss": 0.69,
        "lift_roc_auc": 0.2,
        "lift_log_loss": 0.19,
    }


# evaluation_report


def report_results() -> dict[str, dict[str, float]]:
    """Distinct, hand-picked values per metric so a row cannot borrow another's numbers."""
    model = {name: 0.5 + i / 100 for i, name in enumerate(sorted(ALL_METRICS))}
    baseline = {name: 0.4 + i / 1000 for i, name in enumerate(sorted(ALL_METRICS))}
    lifted = {name: (-1) ** i * i / 200 for i, name in enumerate(sorted(ALL_METRICS))}
    return {"model": model, "baseline": baseline, "lift": lifted}


def table_rows(report: str) -> dict[str, list[str]]:
    rows = {}
    for line in report.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] not in ("metric",):
            rows[cells[0]] = cells[1:]
    return rows


def test_report_has_a_row_per_metric_with_model_baseline_and_lift() -> None:
    results = report_results()

    rows = table_rows(evaluation_report(results, n_rows=123))

    assert {name.removesuffix(" (lower is better)") for name in rows} == ALL_METRICS
    assert "log_loss (lower is better)" in rows
    for i, name in enumerate(sorted(ALL_METRICS)):
        key = f"{name} (lower is better)" if name == "log_loss" else name
        model, baseline, lifted = 0.5 + i / 100, 0.4 + i / 1000, (-1) ** i * i / 200
        assert rows[key] == [f"{model:.4f}", f"{baseline:.4f}", f"{lifted:+.4f}"], name


def test_report_row_format_by_hand() -> None:
    results = {
        "model": {"roc_auc": 0.71234, "log_loss": 0.65},
        "baseline": {"roc_auc": 0.5, "log_loss": 0.69},
        "lift": {"roc_auc": 0.21234, "log_loss": -0.04},
    }

    report = evaluation_report(results, n_rows=42)

    assert "| roc_auc | 0.7123 | 0.5000 | +0.2123 |" in report.splitlines()
    assert "| log_loss (lower is better) | 0.6500 | 0.6900 | -0.0400 |" in report.splitlines()
    assert "Test rows: 42." in report


def test_report_links_the_four_plots() -> None:
    # Links in the UI's route for a run's artifact: its report viewer shows no images.
    base = "#/experiments/0/runs/abc/artifacts"
    report = evaluation_report(report_results(), n_rows=10, artifacts=base)

    links = re.findall(r"- \[(\w+)\]\(([^)]+)\)", report)
    assert links == [
        ("confusion_matrix", f"{base}/plots/confusion_matrix.png"),
        ("roc_curve", f"{base}/plots/roc_curve.png"),
        ("precision_recall_curve", f"{base}/plots/precision_recall_curve.png"),
        ("calibration", f"{base}/plots/calibration.png"),
    ]


def test_report_links_the_files_the_plots_are_logged_as() -> None:
    from pystock_training.plots import evaluation_figures

    y_true = np.array([0, 1, 0, 1, 1, 0, 1, 0, 0, 1])
    y_proba = np.linspace(0.05, 0.95, 10)
    figures = evaluation_figures(y_true, (y_proba >= 0.5).astype(int), y_proba, np.full(10, 0.5))
    try:
        assert set(figures) == {f"{name}.png" for name in PLOTS}
    finally:
        for figure in figures.values():
            plt.close(figure)


# Counted batch by batch: the same groups, the same numbers, whatever the batches.


@pytest.mark.parametrize("batch_rows", [1, 7, 1_000, 5_000])
def test_rows_counted_in_batches_are_the_groups_of_all_the_rows(batch_rows: int) -> None:
    rng = np.random.default_rng(batch_rows)
    y_proba = rng.integers(0, 50, 5_000) / 49  # repeats, exact 0 and 1 included
    y_true = (rng.random(5_000) < y_proba).astype(np.int8)
    y_pred = (y_proba >= 0.5).astype(np.int8)
    counts = PredictionCounts()
    for start in range(0, 5_000, batch_rows):
        rows = slice(start, start + batch_rows)
        counts.add(y_true[rows], y_pred[rows], y_proba[rows])

    counted, grouped = counts.predictions(), group_predictions(y_true, y_pred, y_proba)

    for field in ("y_true", "y_pred", "y_proba", "weight"):
        np.testing.assert_array_equal(getattr(counted, field), getattr(grouped, field))
    assert counted_metrics(counts) == classification_metrics(y_true, y_pred, y_proba)
    assert counts.log_loss() == pytest.approx(skm.log_loss(y_true, y_proba), rel=1e-12)
    np.testing.assert_array_equal(counts.distinct_probabilities(), np.unique(y_proba))
    assert not counts.approximate and counts.rows == 5_000


def test_a_weighted_calibration_curve_is_that_of_the_repeated_rows() -> None:
    y_true = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    y_proba = np.array([0.1, 0.2, 0.3, 0.35, 0.5, 0.6, 0.8, 0.9])
    weight = np.array([3, 1, 2, 5, 1, 4, 2, 1])

    weighted = weighted_calibration(y_true, y_proba, weight, n_bins=4)
    repeated = weighted_calibration(
        np.repeat(y_true, weight), np.repeat(y_proba, weight), np.ones(19), n_bins=4
    )

    for got, expected in zip(weighted, repeated, strict=True):
        np.testing.assert_allclose(got, expected)
    figures = grouped_figures(Predictions(y_true, (y_proba >= 0.5).astype(int), y_proba, weight), 0.4)
    try:
        assert set(figures) == {f"{name}.png" for name in PLOTS}
    finally:
        for figure in figures.values():
            plt.close(figure)


def test_the_report_says_when_metrics_are_approximate() -> None:
    results = {"model": {"roc_auc": 0.6}, "baseline": {"roc_auc": 0.5}, "lift": {"roc_auc": 0.1}}
    assert "Approximate: too many groups." in evaluation_report(results, 10, approximation="too many groups")
    assert "Approximate" not in evaluation_report(results, 10)
