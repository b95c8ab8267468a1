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
    """Figures keyed by the artifact file name they are logged under.

    ``rows`` are the same predictions grouped by ``group_predictions``, if the caller has them.
    """
    figures: dict[str, Figure] = {}
    # Repeated rows merged into weights: the same curves from thousands of points, not millions.
    if rows is None:
        rows = group_predictions(y_true, y_pred, y_proba)

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
    ax.axhline(float(np.mean(y_true)), linestyle="--", color="grey", label="baseline (positive rate)")
    ax.legend(loc="lower left")
    ax.set_title("Precision-recall curve (test)")
    figures["precision_recall_curve.png"] = fig

    fig, ax = _figure((5, 5))
    # Quantile bins need the rows themselves (calibration_curve takes no weights); it is one sort.
    CalibrationDisplay.from_predictions(y_true, y_proba, n_bins=10, strategy="quantile", ax=ax, name="model")
    ax.axvline(float(baseline_proba[0]), linestyle=":", color="grey", label="training prior")
    ax.legend(loc="upper left")
    ax.set_title("Calibration (test, quantile bins)")
    figures["calibration.png"] = fig

    for figure in figures.values():
        figure.tight_layout()
    return figures


def _figure(size: tuple[float, float]) -> tuple[Figure, Axes]:
    figure = Figure(figsize=size)
    return figure, figure.add_subplot()
