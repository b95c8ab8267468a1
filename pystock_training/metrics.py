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
import pandas as pd
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
# Distinct (label, prediction, probability) rows PredictionCounts keeps exactly (16 bytes each:
# 16 MB, and about ten times that while merging); past it, rows merge on a grid of
# probabilities instead. A model of 14 binary flags has at most 4 x 16,384.
MAX_GROUPS = 1 << 20
# The grid past that cap: probabilities rounded to multiples of 2**-20 (about 1e-6), which moves
# ROC AUC and average precision by at most the share of pairs whose scores fall in one cell.
PROBABILITY_GRID = 1 << 20
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


class PredictionCounts:
    """Rows merged by (label, prediction, probability) batch by batch, in memory bounded by the groups.

    The metrics and curves of the merged rows are those of the rows themselves (see
    ``group_predictions``); the groups in ``predictions()`` are in the order ``group_predictions``
    gives, so the same rows in any batches give the same numbers. Past ``MAX_GROUPS`` groups
    they would grow with the rows, so the counts move to a fixed grid (``PROBABILITY_GRID``
    cells): the label metrics stay exact, ROC AUC, average precision and the curves become
    approximations, and log loss is summed exactly from the rows as they pass (``log_loss``).
    ``approximate`` says which applies.
    """

    def __init__(self) -> None:
        self.rows = 0
        # One uint64 per group: the probability's bits shifted left by two, then label * 2 +
        # prediction. For floats >= 0 the bits order as the values do, so the keys sort by
        # (probability, label, prediction), and grouping is one hash of one integer array.
        self._keys = np.empty(0, dtype=np.uint64)
        self._counts = np.empty(0, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_groups = 0
        self._grid: np.ndarray | None = None
        self._grid_pending: list[np.ndarray] = []
        self._grid_pending_rows = 0
        self._log_loss_sum = 0.0

    @property
    def approximate(self) -> bool:
        """Whether the probabilities are rounded to the grid (too many distinct ones to keep)."""
        return self._grid is not None

    def add(self, y_true: np.ndarray, y_pred: np.ndarray, y_proba: np.ndarray) -> None:
        """Merge a batch of rows (0/1 labels and predictions, probabilities in [0, 1]) into the counts."""
        if not len(y_true):
            return
        self.rows += len(y_true)
        kind = np.asarray(y_true, dtype=np.int64) * 2 + y_pred
        if self._grid is not None:
            self._log_loss_sum += _log_loss_sum(kind >> 1, y_proba)
            self._add_to_grid(kind, y_proba)
            return
        keys = _keys(np.asarray(y_proba, dtype=np.float64), kind)
        # A hash table, not a sort: several times faster than np.unique on a batch.
        codes, groups = pd.factorize(keys, sort=False)
        self._pending.append((groups, np.bincount(codes)))
        self._pending_groups += len(groups)
        # Merged when the batches' groups outnumber the merged ones: each group is merged a
        # bounded number of times on average, and memory stays within twice the groups.
        if self._pending_groups > max(len(self._keys), 1 << 16):
            self._merge()

    def predictions(self) -> Predictions:
        """The merged rows, weighted by their count, in the order ``group_predictions`` gives."""
        self._merge()
        if self._grid is not None:
            self._flush_grid()
            present = np.flatnonzero(self._grid)
            proba, kind, weight = (present >> 2) / PROBABILITY_GRID, present & 3, self._grid[present]
        else:
            order = np.argsort(self._keys)
            keys, weight = self._keys[order], self._counts[order]
            proba, kind = (keys >> np.uint64(2)).view(np.float64), (keys & np.uint64(3)).astype(np.int64)
        return Predictions((kind >> 1) & 1, kind & 1, proba, weight)

    def distinct_probabilities(self) -> np.ndarray | None:
        """The sorted distinct probabilities, or None when there were too many to keep."""
        self._merge()
        if self._grid is not None:
            return None
        return np.unique((self._keys >> np.uint64(2)).view(np.float64))

    def log_loss(self) -> float:
        """The exact log loss of every row added (as sklearn computes it), also on the grid."""
        if self._grid is None:
            rows = self.predictions()
            return _log_loss_sum(rows.y_true, rows.y_proba, rows.weight) / self.rows
        return self._log_loss_sum / self.rows

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self._keys, *(batch[0] for batch in self._pending)])
        counts = np.concatenate([self._counts, *(batch[1] for batch in self._pending)])
        self._pending, self._pending_groups = [], 0
        codes, self._keys = pd.factorize(keys, sort=False)
        del keys
        # Float sums of integer counts are exact below 2**53 rows.
        self._counts = np.bincount(codes, weights=counts).astype(np.int64)
        if len(self._keys) > MAX_GROUPS:
            proba = (self._keys >> np.uint64(2)).view(np.float64)
            kind = (self._keys & np.uint64(3)).astype(np.int64)
            self._log_loss_sum = _log_loss_sum(kind >> 1, proba, self._counts)
            self._grid = np.bincount(
                _grid_cells(kind, proba), weights=self._counts, minlength=4 * (PROBABILITY_GRID + 1)
            ).astype(np.int64)
            self._keys, self._counts = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)

    def _add_to_grid(self, kind: np.ndarray, y_proba: np.ndarray) -> None:
        self._grid_pending.append(_grid_cells(kind, y_proba))
        self._grid_pending_rows += len(kind)
        # A bincount over the whole grid costs as much as a million rows: done in bulk.
        if self._grid is not None and self._grid_pending_rows >= len(self._grid) // 4:
            self._flush_grid()

    def _flush_grid(self) -> None:
        if self._grid is not None and self._grid_pending:
            self._grid += np.bincount(np.concatenate(self._grid_pending), minlength=len(self._grid))
        self._grid_pending, self._grid_pending_rows = [], 0


def _keys(y_proba: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Group keys: the probability's bits (its sign bit, 0 here, shifted out), then the kind."""
    return (y_proba.view(np.uint64) << np.uint64(2)) | kind.astype(np.uint64)


def _grid_cells(kind: np.ndarray, y_proba: np.ndarray) -> np.ndarray:
    return np.rint(y_proba * PROBABILITY_GRID).astype(np.int64) * 4 + kind


def _log_loss_sum(y_true: np.ndarray, y_proba: np.ndarray, weight: np.ndarray | None = None) -> float:
    """The summed log loss of rows, clipped as sklearn's ``log_loss`` clips (to [eps, 1 - eps])."""
    eps = np.finfo(np.float64).eps
    loss = -np.where(
        y_true == 1, np.log(np.clip(y_proba, eps, 1 - eps)), np.log(np.clip(1 - y_proba, eps, 1 - eps))
    )
    return float(loss.sum() if weight is None else (loss * weight).sum())


def counted_metrics(counts: PredictionCounts) -> dict[str, float]:
    """All metrics of counted rows; log loss is exact also when the counts are approximate.

    Raises:
        ValueError: The labels hold a single class (ROC AUC is undefined).
    """
    values = grouped_metrics(counts.predictions())
    if counts.approximate:
        values["log_loss"] = counts.log_loss()
    return values


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


def evaluate_predictions(
    rows: Predictions, prior: float, model: dict[str, float] | None = None
) -> dict[str, dict[str, float]]:
    """Model, baseline and lift metrics of grouped predictions, keyed ``model``, ``baseline``, ``lift``.

    ``model`` is the model's metrics on ``rows`` when the caller has them (``counted_metrics``).
    """
    model = grouped_metrics(rows) if model is None else model
    baseline = grouped_metrics(baseline_rows(rows, prior))
    return {"model": model, "baseline": baseline, "lift": lift(model, baseline)}


def flatten(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """Logged metric names: ``roc_auc``, ``baseline_roc_auc``, ``lift_roc_auc``..."""
    flat: dict[str, float] = {}
    for group, scores in results.items():
        prefix = "" if group == "model" else f"{group}_"
        flat |= {f"{prefix}{name}": value for name, value in scores.items()}
    return flat
