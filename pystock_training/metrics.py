"""Classification metrics for the model and its naive baseline, all from sklearn.

sklearn takes ``(y_true, y_pred)``; ROC AUC, average precision and log loss take probabilities,
never hard labels (the MLflow 1.x job got both wrong).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
from sklearn import metrics as skm

# Metrics on hard labels and on probabilities, by the name they are logged under everywhere.
LABEL_METRICS: Final[dict[str, Callable[[np.ndarray, np.ndarray], float]]] = {
    "accuracy": skm.accuracy_score,
    "balanced_accuracy": skm.balanced_accuracy_score,
    "precision": lambda y, p: skm.precision_score(y, p, zero_division=0),
    "recall": lambda y, p: skm.recall_score(y, p, zero_division=0),
    "f1": lambda y, p: skm.f1_score(y, p, zero_division=0),
    "mcc": skm.matthews_corrcoef,
}
PROBA_METRICS: Final[dict[str, Callable[[np.ndarray, np.ndarray], float]]] = {
    "roc_auc": skm.roc_auc_score,
    "average_precision": skm.average_precision_score,
    "log_loss": lambda y, p: skm.log_loss(y, p, labels=[0, 1]),
}
METRIC_NAMES: Final = (*LABEL_METRICS, *PROBA_METRICS)
# Every metric is better when higher except log loss; the gate and the lift need to know.
LOWER_IS_BETTER: Final = frozenset({"log_loss"})


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, y_proba: np.ndarray) -> dict[str, float]:
    """All metrics of one set of predictions.

    Raises:
        ValueError: ``y_true`` holds a single class (ROC AUC is undefined).
    """
    if len(np.unique(y_true)) < 2:
        raise ValueError("the test labels hold a single class; ROC AUC is undefined")
    scores = {name: float(fn(y_true, y_pred)) for name, fn in LABEL_METRICS.items()}
    scores |= {name: float(fn(y_true, y_proba)) for name, fn in PROBA_METRICS.items()}
    return scores


def baseline_predictions(prior: float, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The naive baseline: the training prior as probability, the majority class as label."""
    y_pred = np.full(n_rows, int(prior >= 0.5), dtype=np.int8)
    y_proba = np.full(n_rows, prior, dtype=np.float64)
    return y_pred, y_proba


def lift(model: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """How much better the model is than the baseline per metric; positive means better."""
    return {
        name: (baseline[name] - model[name]) if name in LOWER_IS_BETTER else (model[name] - baseline[name])
        for name in model
    }


def evaluate_predictions(
    y_true: np.ndarray, y_pred: np.ndarray, y_proba: np.ndarray, prior: float
) -> dict[str, dict[str, float]]:
    """Model, baseline and lift metrics, keyed ``model``, ``baseline``, ``lift``."""
    model = classification_metrics(y_true, y_pred, y_proba)
    baseline = classification_metrics(y_true, *baseline_predictions(prior, len(y_true)))
    return {"model": model, "baseline": baseline, "lift": lift(model, baseline)}


def flatten(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """Logged metric names: ``roc_auc``, ``baseline_roc_auc``, ``lift_roc_auc``..."""
    flat: dict[str, float] = {}
    for group, scores in results.items():
        prefix = "" if group == "model" else f"{group}_"
        flat |= {f"{prefix}{name}": value for name, value in scores.items()}
    return flat
