"""The evaluation of the test predictions in memory that does not grow with their rows.

Two passes over the predictions (a CSV or a directory of parts, see ``handoff``), never their
whole columns:

1. ``summarize`` checks every row and counts it: the model's rows merged by (label, prediction,
   probability), and, where the champion's cells are filled, the champion's and the candidate's.
   The metrics and plots come from those counts.
2. ``bootstrap_cis`` draws the block starts of the lift's and the champion comparison's
   bootstraps first, gathers the rows those blocks cover in one pass (at most
   ``N_RESAMPLES * MAX_RESAMPLE_ROWS`` of them each, however many rows there are), then scores
   the resamples as ``gate.paired_bootstrap_ci`` would with every row in memory: the same
   intervals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pystock_training.gate import BlockBootstrap, BootstrapCI, coded_scorer, scores_scorer, uses_probabilities
from pystock_training.handoff import PartIdentity, iter_predictions
from pystock_training.metrics import (
    MAX_GROUPS,
    PROBABILITY_GRID,
    PredictionCounts,
    baseline_predictions,
)

APPROXIMATION = (
    f"more than {MAX_GROUPS:,} distinct (label, prediction, probability) rows: ROC AUC, average precision "
    f"and the curves use probabilities rounded to multiples of 1/{PROBABILITY_GRID:,}; log loss, "
    "the label metrics and the bootstrap resamples use the exact values"
)


@dataclass
class PredictionsSummary:
    """What the first pass over the predictions counted.

    ``champion`` and ``candidate_clean`` count the champion's and the candidate's rows where the
    champion's cells are filled (the rows it never trained on); both are None when the
    predictions carry no champion.
    """

    path: Path
    n_rows: int = 0
    prior: float = 0.0
    model: PredictionCounts = field(default_factory=PredictionCounts)
    champion: PredictionCounts | None = None
    candidate_clean: PredictionCounts | None = None
    identities: list[PartIdentity] = field(default_factory=list)

    @property
    def n_clean(self) -> int:
        """The rows where the champion's cells are filled."""
        return self.champion.rows if self.champion else 0

    @property
    def approximation(self) -> str:
        """Why some metrics are approximate, or "" when every count is exact."""
        counts = [self.model, self.champion, self.candidate_clean]
        return APPROXIMATION if any(count and count.approximate for count in counts) else ""


def summarize(path: str | Path, sha256: str = "") -> PredictionsSummary:
    """Check and count every row of the predictions, batch by batch.

    Raises:
        DataError: The predictions are missing, malformed, or do not hash to ``sha256``.
    """
    summary = PredictionsSummary(Path(path))
    for batch in iter_predictions(path, sha256, identities=summary.identities):
        columns = batch.columns
        y_true, y_pred, y_proba = columns["y_test"], columns["y_pred"], columns["y_proba"]
        if not summary.n_rows:
            summary.prior = float(columns["baseline_proba"][0])
        summary.n_rows += batch.num_rows
        summary.model.add(y_true, y_pred, y_proba)
        if "champion_proba" not in columns:
            continue
        if summary.champion is None or summary.candidate_clean is None:
            summary.champion, summary.candidate_clean = PredictionCounts(), PredictionCounts()
        clean = _clean(columns)
        summary.champion.add(
            y_true[clean], columns["champion_pred"][clean].astype(np.int8), columns["champion_proba"][clean]
        )
        summary.candidate_clean.add(y_true[clean], y_pred[clean], y_proba[clean])
    return summary


def _clean(columns: dict[str, np.ndarray]) -> slice | np.ndarray:
    """The rows whose champion cells are filled; a slice when all are (no copy of the batch)."""
    filled = ~np.isnan(columns["champion_proba"])
    return slice(None) if filled.all() else filled


def bootstrap_cis(
    summary: PredictionsSummary, metric: str, lift_point: float, champion_point: float | None
) -> tuple[BootstrapCI, BootstrapCI | None]:
    """The CIs of the lift over the baseline and, with ``champion_point``, of the champion difference.

    The same intervals as ``evaluate_model.lift_ci`` and ``compare_champion`` give with every
    row in memory; the points are the oriented differences on all the rows they compare.

    Raises:
        ValueError: The labels compared hold a single class, or too few rows of one class to
            resample.
        DataError: A part changed since ``summarize`` read it.
    """
    probabilities = uses_probabilities(metric)
    lift = _Side(
        BlockBootstrap(summary.n_rows, metric),
        _counted_values(summary.model, probabilities),
        None,
        baseline=_baseline(summary.prior, probabilities),
    )
    sides = [lift]
    champion = None
    if champion_point is not None and summary.champion and summary.candidate_clean:
        champion = _Side(
            BlockBootstrap(summary.n_clean, metric),
            _counted_values(summary.candidate_clean, probabilities),
            _counted_values(summary.champion, probabilities),
        )
        sides.append(champion)
    candidate_column = "y_proba" if probabilities else "y_pred"
    champion_column = "champion_proba" if probabilities else "champion_pred"
    while pending := [side for side in sides if not side.bootstrap.done]:
        for side in pending:
            side.gather()
        _gather(summary, pending, candidate_column, champion_column)
        for side in pending:
            side.score(metric)
    return lift.bootstrap.result(lift_point), champion.bootstrap.result(champion_point) if champion else None


@dataclass
class _Side:
    """One bootstrap: the candidate against a champion, or against the baseline's constant score.

    ``candidate_values`` and ``champion_values`` are the sorted distinct scores of each whole
    column (None: too many to count, the scores are gathered as they are); ``baseline`` is the
    baseline's score when it plays the champion.
    """

    bootstrap: BlockBootstrap
    candidate_values: np.ndarray | None
    champion_values: np.ndarray | None
    baseline: float | None = None
    rows: _BlockRows | None = None

    @property
    def clean_only(self) -> bool:
        """Whether the side compares the rows where the champion's cells are filled."""
        return self.baseline is None

    def gather(self) -> None:
        """Draw the next round and make room for the rows it covers."""
        columns = [_Encoding(self.candidate_values)]
        if self.clean_only:
            columns.append(_Encoding(self.champion_values))
        self.rows = _BlockRows(self.bootstrap.draw(), self.bootstrap, columns)

    def score(self, metric: str) -> None:
        """Score the gathered round."""
        rows = self.rows
        assert rows is not None
        size = self.bootstrap.size
        candidate = rows.scorer(0, metric, size)
        if self.baseline is None:
            champion = rows.scorer(1, metric, size)
        else:
            # The baseline's score on every row, as a read-only view of one value.
            champion = coded_scorer(
                metric, np.broadcast_to(np.int8(0), rows.y.shape), np.array([self.baseline]), size
            )
        self.bootstrap.score(rows.y, rows.rows_of, candidate, champion)
        self.rows = None


class _Encoding:
    """How a gathered score column is stored: codes into its distinct values, or the scores."""

    def __init__(self, values: np.ndarray | None) -> None:
        self.values = values
        # A hash lookup, built once: several times faster than np.searchsorted on many rows.
        self._index = None if values is None else pd.Index(values)

    @property
    def dtype(self) -> type[np.generic]:
        """Two bytes a row for up to 65,536 distinct scores (a model of 14 flags has 16,384)."""
        if self.values is None:
            return np.float64
        return np.uint16 if len(self.values) <= 1 << 16 else np.uint32

    def encode(self, scores: np.ndarray) -> np.ndarray:
        """The scores as stored."""
        if self._index is None:
            return scores
        codes = self._index.get_indexer(scores)
        if len(codes) and codes.min() < 0:
            raise RuntimeError("a gathered score is not among the values the first pass counted")
        return codes


def _counted_values(counts: PredictionCounts, probabilities: bool) -> np.ndarray | None:
    """The sorted distinct scores of a counted column (labels 0 and 1 for label metrics)."""
    if not probabilities:
        # Label metrics never count by value.
        return np.array([0.0, 1.0])
    return counts.distinct_probabilities()


def _baseline(prior: float, probabilities: bool) -> float:
    """The baseline's one score: the prior as probability, the majority class as label."""
    return prior if probabilities else float(baseline_predictions(prior, 1)[0][0])


class _BlockRows:
    """The rows a round of block starts covers, gathered from rows streaming past in order.

    Rows are placed on the unrolled circle ``0 .. n_rows + block_length``, where position
    ``n_rows + i`` is row i again, so every block, wrapped or not, is one interval. Overlapping
    intervals are merged and stored end to end: a block's rows are consecutive in storage, and
    storage holds each row a round needs once (labels, then each score column as encoded).
    """

    def __init__(self, starts: np.ndarray, bootstrap: BlockBootstrap, encodings: list[_Encoding]) -> None:
        self.n_rows, self.length, self.size = bootstrap.n_rows, bootstrap.length, bootstrap.size
        flat = starts.ravel()
        order = np.argsort(flat, kind="stable")
        ordered = flat[order]
        opens = np.empty(len(ordered), dtype=bool)
        opens[0] = True
        np.greater(ordered[1:], ordered[:-1] + self.length, out=opens[1:])
        group = np.cumsum(opens) - 1
        firsts = np.flatnonzero(opens)
        self.starts = ordered[firsts]
        # Sorted starts of one length: an interval ends where its last block does.
        self.ends = ordered[np.append(firsts[1:] - 1, len(ordered) - 1)] + self.length
        lengths = self.ends - self.starts
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        block_offsets = np.empty(len(flat), dtype=np.int64)
        block_offsets[order] = self.offsets[group] + (ordered - self.starts[group])
        self.block_offsets = block_offsets.reshape(starts.shape)
        total = int(lengths.sum())
        self.y = np.empty(total, dtype=np.int8)
        self.encodings = encodings
        self.columns = [np.empty(total, dtype=encoding.dtype) for encoding in encodings]
        self.filled = 0
        self._within = np.arange(self.length)

    def rows_of(self, resample: int) -> np.ndarray:
        """Resample i's rows in storage, its blocks one after another, cut to the resample size."""
        return (self.block_offsets[resample][:, None] + self._within).ravel()[: self.size]

    def scorer(self, column: int, metric: str, size: int) -> Callable[[np.ndarray, np.ndarray], float]:
        """The resample scorer of a gathered score column."""
        values = self.encodings[column].values
        if values is None:
            return scores_scorer(metric, self.columns[column])
        return coded_scorer(metric, self.columns[column], values, size)

    def feed(self, first_row: int, y: np.ndarray, scores: list[np.ndarray]) -> None:
        """Store the rows of a batch that start at ``first_row`` wherever a block covers them."""
        for begin in (first_row, first_row + self.n_rows):
            end = begin + len(y)
            first = int(np.searchsorted(self.ends, begin, side="right"))
            last = int(np.searchsorted(self.starts, end, side="left"))
            for interval in range(first, last):
                low, high = max(begin, self.starts[interval]), min(end, self.ends[interval])
                stored_at = self.offsets[interval] + low - self.starts[interval]
                into = slice(stored_at, stored_at + high - low)
                source = slice(low - begin, high - begin)
                self.y[into] = y[source]
                for stored, encoding, column in zip(self.columns, self.encodings, scores, strict=True):
                    stored[into] = encoding.encode(column[source])
                self.filled += high - low


def _gather(
    summary: PredictionsSummary, sides: list[_Side], candidate_column: str, champion_column: str
) -> None:
    """One pass over the predictions, storing the rows each side's blocks cover."""
    needs_champion = any(side.clean_only for side in sides)
    columns = ["y_test", candidate_column] + (["champion_proba", champion_column] if needs_champion else [])
    clean_rows = 0
    for batch in iter_predictions(summary.path, columns=set(columns), identities=summary.identities):
        values = batch.columns
        y_true, candidate = values["y_test"], values[candidate_column]
        clean = _clean(values) if needs_champion else None
        for side in sides:
            rows = side.rows
            assert rows is not None
            if not side.clean_only:
                rows.feed(batch.first_row, y_true, [candidate])
            elif clean is not None:
                rows.feed(clean_rows, y_true[clean], [candidate[clean], values[champion_column][clean]])
        if clean is not None:
            clean_rows += batch.num_rows if isinstance(clean, slice) else int(clean.sum())
    for side in sides:
        rows = side.rows
        assert rows is not None
        if rows.filled != len(rows.y):
            raise RuntimeError(f"gathered {rows.filled} of the {len(rows.y)} rows the resamples need")
