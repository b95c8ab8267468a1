"""Classification metrics for the model and its naive baseline, all from sklearn.

sklearn takes ``(y_true, y_pred)``; ROC AUC, average precision and log loss take probabilities,
never hard labels (the MLflow 1.x job got both wrong).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

import numpy as np
from sklearn import metrics as skm

from pystock_training import config

# Metrics on hard labels and on probabilities, by the name they are logged under everywhere.
# Each takes (y_true, y_pred or y_proba) and an optional sample_weight.
LABEL_METRICS: Final[dict[str, Callable[..., float]]] = {
    "accuracy": skm.accuracy_score,
    "balanced_accuracy": skm.balanced_accuracy_score,
    "precision": partial(skm.precision_score, zero_division=0),
    "recall": partial(skm.recall_score, zero_division=0),
    "f1": partial(skm.f1_score, zero_division=0),
    "mcc": skm.matthews_corrcoef,
}
PROBA_METRICS: Final[dict[str, Callable[..., float]]] = {
    "roc_auc": skm.roc_auc_score,
    "average_precision": skm.average_precision_score,
    "log_loss": partial(skm.log_loss, labels=[0, 1]),
}
# Their names, and which are better when lower, live in config (parameter checks must not
# import sklearn); tests/test_metrics.py checks they agree with the functions above.


@dataclass(frozen=True)
class Predictions:
    """Test predictions, possibly with identical rows merged into one with a weight."""

    y_true: np.ndarray
    y_pred: np.ndarray
    y_proba: np.ndarray
    weight: np.ndarray | None = None


def group_predictions(y_true: np.ndarray, y_pred: np.ndarray, y_proba: np.ndarray) -> Predictions:
    """Merge rows with the same (label, prediction, probability), weighted by their count.

    Every metric and curve here is a weighted sum over rows, so the merged rows give the same
    values as the originals. They are far fewer when probabilities repeat, as they do for a
    model of 14 binary flags (at most 16,384 values): sklearn then works on thousands of rows
    instead of millions. When probabilities hardly repeat, the rows are kept as they are.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    kept = Predictions(y_true, y_pred, np.asarray(y_proba))
    if len(y_true) == 0 or not _zero_one(y_true) or not _zero_one(y_pred):
        return kept
    values, inverse = np.unique(y_proba, return_inverse=True)
    if len(values) * 2 > len(y_true):
        return kept
    key = (inverse.astype(np.int64) * 2 + y_true) * 2 + y_pred
    counts = np.bincount(key, minlength=4 * len(values))
    present = np.flatnonzero(counts)
    return Predictions((present >> 1) & 1, present & 1, values[present >> 2], counts[present])


def _zero_one(values: np.ndarray) -> bool:
    return values.dtype.kind in "iub" and values.min() >= 0 and values.max() <= 1


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, y_proba: np.ndarray) -> dict[str, float]:
    """All metrics of one set of predictions.

    Raises:
        ValueError: ``y_true`` holds a single class (ROC AUC is undefined).
    """
    return grouped_metrics(group_predictions(y_true, y_pred, y_proba))


def grouped_metrics(rows: Predictions) -> dict[str, float]:
    """All metrics of predictions already grouped by ``group_predictions``.

    Raises:
        ValueError: ``y_true`` holds a single class (ROC AUC is undefined).
    """
    if len(np.unique(rows.y_true)) < 2:
        raise ValueError("the test labels hold a single class; ROC AUC is undefined")
    values = {
        name: float(fn(rows.y_true, rows.y_pred, sample_weight=rows.weight))
        for name, fn in LABEL_METRICS.items()
    }
    values |= {
        name: float(fn(rows.y_true, rows.y_proba, sample_weight=rows.weight))
        for name, fn in PROBA_METRICS.items()
    }
    return values


def baseline_predictions(prior: float, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The naive baseline: the training prior as probability, the majority class as label."""
    y_pred = np.full(n_rows, int(prior >= 0.5), dtype=np.int8)
    y_proba = np.full(n_rows, prior, dtype=np.float64)
    return y_pred, y_proba


def lift(model: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """How much better the model is than the baseline per metric; positive means better."""
    return {
        name: (baseline[name] - model[name])
        if name in config.LOWER_IS_BETTER
        else (model[name] - baseline[name])
        for name in model
    }


def baseline_rows(rows: Predictions, prior: float) -> Predictions:
    """The baseline's predictions on the same rows, grouped: one row per label, weighted by its count.

    The baseline predicts the same for every row, so its rows differ only by label; building
    them from the label counts saves sorting millions of identical probabilities.
    """
    weight = np.ones(len(rows.y_true), dtype=np.int64) if rows.weight is None else rows.weight
    labels = np.array([0, 1])
    counts = np.array([weight[rows.y_true == label].sum() for label in labels])
    present = counts > 0
    y_pred, y_proba = baseline_predictions(prior, len(labels))
    return Predictions(labels[present], y_pred[present], y_proba[present], counts[present])


def evaluate_predictions(rows: Predictions, prior: float) -> dict[str, dict[str, float]]:
    """Model, baseline and lift metrics of grouped predictions, keyed ``model``, ``baseline``, ``lift``."""
    model = grouped_metrics(rows)
    baseline = grouped_metrics(baseline_rows(rows, prior))
    return {"model": model, "baseline": baseline, "lift": lift(model, baseline)}


def flatten(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """Logged metric names: ``roc_auc``, ``baseline_roc_auc``, ``lift_roc_auc``..."""
    flat: dict[str, float] = {}
    for group, scores in results.items():
        prefix = "" if group == "model" else f"{group}_"
        flat |= {f"{prefix}{name}": value for name, value in scores.items()}
    return flat
