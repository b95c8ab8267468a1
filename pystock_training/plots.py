"""Evaluation plots: confusion matrix, ROC, precision-recall and calibration.

Figures are built with ``matplotlib.figure.Figure`` directly, not pyplot: no global backend or
figure registry to set up (the job runs headless from cron, CI and containers) and nothing to
close afterwards.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from pystock_training.metrics import Predictions, group_predictions


def evaluation_figures(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    y_proba: np.ndarray,
    baseline_proba: np.ndarray,
    rows: Predictions | None = None,
) -> dict[str, Figure]:
    """Figures of predictions in memory, keyed by the artifact file name they are logged under.

    ``rows`` are the same predictions grouped by ``group_predictions``, if the caller has them.
    """
    if rows is None:
        rows = group_predictions(y_true, y_pred, y_proba)
    return grouped_figures(rows, float(baseline_proba[0]))


def grouped_figures(rows: Predictions, prior: float) -> dict[str, Figure]:
    """Figures of grouped (weighted) predictions, keyed by the artifact file name they are logged under.

    Every curve is drawn from the weighted groups, so the cost and memory follow the groups
    (thousands for a model of binary flags), not the test rows. ``prior`` is the training prior
    (the naive baseline's probability).
    """
    figures: dict[str, Figure] = {}
    weight = np.ones(len(rows.y_true)) if rows.weight is None else rows.weight

    fig, ax = _figure((5, 4))
    ConfusionMatrixDisplay.from_predictions(
        rows.y_true, rows.y_pred, sample_weight=rows.weight, ax=ax, colorbar=False
    )
    ax.set_title("Confusion matrix (test)")
    figures["confusion_matrix.png"] = fig

    fig, ax = _figure((5, 5))
    RocCurveDisplay.from_predictions(
        rows.y_true, rows.y_proba, sample_weight=rows.weight, ax=ax, name="model"
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="baseline (AUC = 0.5)")
    ax.legend(loc="lower right")
    ax.set_title("ROC curve (test)")
    figures["roc_curve.png"] = fig

    fig, ax = _figure((5, 5))
    PrecisionRecallDisplay.from_predictions(
        rows.y_true, rows.y_proba, sample_weight=rows.weight, ax=ax, name="model"
    )
    positive_rate = float(np.average(rows.y_true, weights=weight))
    ax.axhline(positive_rate, linestyle="--", color="grey", label="baseline (positive rate)")
    ax.legend(loc="lower left")
    ax.set_title("Precision-recall curve (test)")
    figures["precision_recall_curve.png"] = fig

    fig, ax = _figure((5, 5))
    prob_true, prob_pred = weighted_calibration(rows.y_true, rows.y_proba, weight)
    CalibrationDisplay(prob_true, prob_pred, rows.y_proba).plot(ax=ax, name="model")
    ax.axvline(prior, linestyle=":", color="grey", label="training prior")
    ax.legend(loc="upper left")
    ax.set_title("Calibration (test, quantile bins)")
    figures["calibration.png"] = fig

    for figure in figures.values():
        figure.tight_layout()
    return figures


def weighted_calibration(
    y_true: np.ndarray, y_proba: np.ndarray, weight: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """The share of positives and the mean probability per quantile bin of weighted rows.

    sklearn's ``calibration_curve(strategy="quantile")`` for rows given with a weight (it takes
    none): bin edges at the weighted quantiles of the probabilities, empty bins left out.
    """
    edges = np.percentile(y_proba, np.linspace(0, 100, n_bins + 1), weights=weight, method="inverted_cdf")
    bins = np.searchsorted(edges[1:-1], y_proba)
    total = np.bincount(bins, weights=weight, minlength=n_bins)
    positives = np.bincount(bins, weights=weight * y_true, minlength=n_bins)
    probability = np.bincount(bins, weights=weight * y_proba, minlength=n_bins)
    filled = total > 0
    return positives[filled] / total[filled], probability[filled] / total[filled]


def _figure(size: tuple[float, float]) -> tuple[Figure, Axes]:
    figure = Figure(figsize=size)
    return figure, figure.add_subplot()
