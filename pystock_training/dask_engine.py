"""The dask engine: train_model's work spread over a Dask cluster, part by part.

The client (the train_model process) never holds the table. It asks the workers for:

1. a scan of every part: its rows, the per-column range of int8 flags, its sha256 (for the
   manifest digest, sources.py), the data contract's checks (each error naming the part and
   line) and, for int8 flags, the count of each distinct row and of its positive labels;
2. training: for a table of int8 flags, the client adds up the counts of the parts wholly in
   the training or the validation rows (the parts a cut falls in are counted again, range by
   range): a map-reduce bounded by the code space (16,384 codes for 14 flags), not by the rows.
   It trains on the merged rows exactly as the local engine does (distinct.py), so both give
   the same model up to float rounding. Any other table trains with ``xgboost.dask.train`` on
   ``DaskQuantileDMatrix``, whose bins depend on how the rows are spread over the workers: the
   run records how many took part;
3. the test predictions of each part, as the CSV bytes of one part of the predictions folder,
   which the client writes as they arrive, a few at a time, so memory stays bounded.

The split is ``time`` only: the last ``test_size`` of rows over all parts are the test set and
the validation rows end the training part, as with one file. A random split needs every row's
position in one process, which is what this engine avoids.

Task functions are module-level so that the workers, which import this package, can run them.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from pystock_training import config
from pystock_training.cluster import run_bounded
from pystock_training.data.parts import load_part
from pystock_training.data.split import time_split_bounds
from pystock_training.data.table import LABEL_COLUMN, feature_names
from pystock_training.digest import FileDigest
from pystock_training.distinct import CodeSpace, column_range, distinct_rows
from pystock_training.errors import DataError
from pystock_training.handoff import predictions_table
from pystock_training.sources import Part, manifest_digest

if TYPE_CHECKING:
    import xgboost as xgb
    from distributed import Client

    from pystock_training.params import TrainParams

logger = logging.getLogger(__name__)

# A part with more distinct rows than this is counted again when training rather than sent back
# whole (14 flags have 16,384 at most); the client keeps at most this many bytes of them.
MAX_PART_COUNTS = 1 << 16
MAX_KEPT_COUNTS_BYTES = 256 << 20


@dataclass(frozen=True)
class PartScan:
    """What the scan of one part found."""

    rows: int
    n_features: int
    # Per-column minimum and maximum when every feature is an int8 flag, else None.
    low: np.ndarray | None
    high: np.ndarray | None
    positives: int
    sha256: str
    size: int
    # The part's distinct rows and their counts (int8 flags that repeat), else None.
    counts: RowCounts | None = None


@dataclass(frozen=True)
class RowCounts:
    """Distinct int8 rows, how often each occurs and how many of those rows are labelled 1.

    Rows, not codes: each part has its own code space (its columns' ranges), and the client
    codes them again in the table's.
    """

    rows: np.ndarray
    totals: np.ndarray
    positives: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.totals.nbytes + self.positives.nbytes


def row_counts(
    matrix: np.ndarray, labels: np.ndarray, extremes: tuple[np.ndarray, np.ndarray] | None = None
) -> RowCounts | None:
    """The distinct rows of an int8 matrix with their counts; None for floats or too many to be worth it."""
    if matrix.dtype != np.int8 or len(matrix) == 0:
        return None
    space = CodeSpace.of(*(extremes or column_range(matrix)))
    if space is None:
        return None
    codes = space.encode(matrix)
    totals = np.bincount(codes, minlength=space.n_codes)
    present = np.flatnonzero(totals)
    if len(present) > MAX_PART_COUNTS:
        return None
    positives = np.bincount(codes, weights=labels, minlength=space.n_codes)[present].astype(np.int64)
    return RowCounts(space.decode(present), totals[present].astype(np.int64), positives)


@dataclass(frozen=True)
class Layout:
    """Where each part's rows sit in the table, and where the time split cuts it."""

    parts: tuple[Part, ...]
    offsets: tuple[int, ...]  # the global position of each part's first row
    rows: tuple[int, ...]
    train_end: int  # validation rows start here
    fit_end: int  # test rows start here

    @property
    def n_rows(self) -> int:
        return self.offsets[-1] + self.rows[-1]

    def overlapping(self, low: int, high: int) -> list[int]:
        """The indices of the parts with rows in ``[low, high)``."""
        return [
            index
            for index, (offset, rows) in enumerate(zip(self.offsets, self.rows, strict=True))
            if offset < high and offset + rows > low
        ]


def scan_part(part: Part) -> PartScan:
    """Read and check one part: its size and digest, the range of each int8 column, its row counts."""
    dataset = load_part(part)
    matrix = dataset.features.to_numpy()
    extremes = column_range(matrix) if matrix.dtype == np.int8 else None
    return PartScan(
        rows=dataset.n_rows,
        n_features=matrix.shape[1],
        low=extremes[0] if extremes else None,
        high=extremes[1] if extremes else None,
        positives=int(dataset.labels.sum()),
        sha256=dataset.digest.sha256,
        size=dataset.digest.size,
        # Counted while the part is in memory: a part wholly in the training or the validation
        # rows (all but at most two) is not read again to train.
        counts=row_counts(matrix, dataset.labels, extremes),
    )


def _rows_in(part: Part, offset: int, low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """The features and labels of the part's rows whose global positions lie in ``[low, high)``."""
    dataset = load_part(part)
    start, stop = max(low - offset, 0), min(high - offset, dataset.n_rows)
    return dataset.features.to_numpy()[start:stop], dataset.labels[start:stop]


def count_rows(
    part: Part, offset: int, ranges: tuple[tuple[int, int], ...], space: CodeSpace | None = None
) -> list[RowCounts | None]:
    """For each global row range, the distinct rows of the part's rows in it with their counts.

    With ``space`` (the table's code space) every range is counted however many distinct rows
    it has; without it, a range with too many gives None, as a scan does.
    """
    dataset = load_part(part)
    matrix = dataset.features.to_numpy()
    counts: list[RowCounts | None] = []
    for low, high in ranges:
        start, stop = max(low - offset, 0), min(high - offset, dataset.n_rows)
        if start >= stop:
            counts.append(None)
        elif space is None:
            counts.append(row_counts(matrix[start:stop], dataset.labels[start:stop]))
        else:
            counts.append(_counts_in(space, matrix[start:stop], dataset.labels[start:stop]))
    return counts


def _counts_in(space: CodeSpace, matrix: np.ndarray, labels: np.ndarray) -> RowCounts:
    codes = space.encode(matrix)
    totals = np.bincount(codes, minlength=space.n_codes)
    present = np.flatnonzero(totals)
    positives = np.bincount(codes, weights=labels, minlength=space.n_codes)[present].astype(np.int64)
    return RowCounts(space.decode(present), totals[present].astype(np.int64), positives)


def load_range(item: tuple[Part, int], low: int, high: int) -> pd.DataFrame:
    """The part's rows in the global range ``[low, high)`` as features ``f0..`` and ``label`` (float path)."""
    part, offset = item
    features, labels = _rows_in(part, offset, low, high)
    # float32 whatever the part's own type: every partition of the frame has the same dtypes.
    frame = pd.DataFrame(features.astype(np.float32), columns=feature_names(features.shape[1]), copy=False)
    frame[LABEL_COLUMN] = labels
    return frame


@dataclass(frozen=True)
class PredictTask:
    """What every predict task shares (scattered once to the workers)."""

    booster: xgb.Booster
    champion: xgb.Booster | None
    # Test rows at or beyond this position are ones the champion never trained on.
    clean_start: int
    threshold: float
    prior: float


@dataclass(frozen=True)
class PredictedPart:
    """One part's test predictions as the CSV part of the hand-off, with what the client checks."""

    csv: bytes
    rows: int
    positives: int
    # The part's first test rows, as the logged model's input example.
    example: pd.DataFrame


def _proba(booster: xgb.Booster, rows: pd.DataFrame) -> np.ndarray:
    # model.predict_proba's call, without importing model.py (and MLflow) into every worker.
    return np.asarray(booster.inplace_predict(rows), dtype=np.float64)


def predict_part(part: Part, offset: int, test_start: int, task: PredictTask) -> PredictedPart:
    """Predict the part's test rows, by the candidate and (on its clean rows) the champion, as CSV.

    The CSV is encoded here, on the worker, so the workers share that work and the client only
    writes bytes.
    """
    features, labels = _rows_in(part, offset, test_start, sys.maxsize)
    frame = pd.DataFrame(features, columns=feature_names(features.shape[1]), copy=False)
    y_proba = distinct_rows(frame).predict(lambda distinct: _proba(task.booster, distinct))
    champion_proba = None
    if task.champion is not None:
        champion = task.champion
        # The clean rows are the ones from clean_start on: a run at the end of the part.
        cut = min(max(task.clean_start - max(test_start, offset), 0), len(labels))
        champion_proba = np.full(len(labels), np.nan)
        if cut < len(labels):
            clean = distinct_rows(frame.iloc[cut:])
            champion_proba[cut:] = clean.predict(lambda distinct: _proba(champion, distinct))
    table = predictions_table(labels, y_proba, task.threshold, task.prior, champion_proba)
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(table, sink, pa_csv.WriteOptions(quoting_style="none"))
    return PredictedPart(
        sink.getvalue().to_pybytes(),
        len(labels),
        int(labels.sum()),
        frame.iloc[: config.EXAMPLE_ROWS].astype(np.float64),
    )


def scan(client: Client, parts: list[Part]) -> list[PartScan]:
    """Scan every part on the cluster; the table's column count must agree across parts.

    Raises:
        DataError: A part breaks the data contract or has another number of columns.
    """
    scans: list[PartScan | None] = [None] * len(parts)
    kept = 0
    for index, result in run_bounded(client, scan_part, ((part,) for part in parts)):
        if result.counts is not None:
            if kept + result.counts.nbytes > MAX_KEPT_COUNTS_BYTES:
                # Past the budget the part is counted again when training: memory stays bounded.
                result = replace(result, counts=None)
            else:
                kept += result.counts.nbytes
        scans[index] = result
    done = [result for result in scans if result is not None]
    for part, result in zip(parts, done, strict=True):
        if result.n_features != done[0].n_features:
            raise DataError(
                part.url,
                f"has {result.n_features} feature columns, the first part ({parts[0].name}) "
                f"has {done[0].n_features}",
            )
    return done


def layout_of(source: str, parts: list[Part], scans: list[PartScan], test_size: float) -> Layout:
    """The parts' offsets and the time split's cut points, after the checks of the whole table.

    Raises:
        DataError: Too few rows, a single class, or a part of the split would be empty.
    """
    rows = [result.rows for result in scans]
    n_rows = sum(rows)
    if n_rows < config.MIN_ROWS:
        raise DataError(source, f"too few rows: {n_rows}, need at least {config.MIN_ROWS}")
    positives = sum(result.positives for result in scans)
    if positives in (0, n_rows):
        raise DataError(source, f"every label is {int(positives > 0)}; training needs both classes")
    train_end, fit_end = time_split_bounds(n_rows, test_size, source=source)
    offsets = np.concatenate([[0], np.cumsum(rows[:-1])]).astype(int)
    return Layout(tuple(parts), tuple(int(o) for o in offsets), tuple(rows), train_end, fit_end)


def table_digest(scans: list[PartScan]) -> FileDigest:
    """The manifest digest of the scanned parts (data/parts.py)."""
    return manifest_digest([(result.sha256, result.size) for result in scans])


def code_space(scans: list[PartScan]) -> CodeSpace | None:
    """The code space of the whole table when it is int8 flags within ``MAX_CODES`` codes, else None."""
    if any(result.low is None for result in scans):
        return None
    low = np.min([result.low for result in scans], axis=0)
    high = np.max([result.high for result in scans], axis=0)
    space = CodeSpace.of(low, high)
    if space is not None:
        logger.info("int8 flags: counting %d possible distinct rows on the workers", space.n_codes)
    return space


@dataclass(frozen=True)
class MergedRows:
    """Distinct rows with their counts and mean labels: what the local engine trains on."""

    rows: pd.DataFrame
    labels: np.ndarray
    weights: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.weights.sum())

    @property
    def positives(self) -> int:
        return round(float((self.labels * self.weights).sum()))


def merged_rows(
    client: Client, layout: Layout, scans: list[PartScan], space: CodeSpace
) -> tuple[MergedRows, MergedRows]:
    """The training and validation rows merged by code in ``space``, from the parts' counts.

    A part wholly in one range adds the counts its scan returned; a part that straddles a cut
    (or whose counts were not kept) is counted again on a worker, range by range.
    """
    ranges = ((0, layout.train_end), (layout.train_end, layout.fit_end))
    totals = [np.zeros(space.n_codes, dtype=np.int64) for _ in ranges]
    positives = [np.zeros(space.n_codes, dtype=np.int64) for _ in ranges]

    def add(position: int, counts: RowCounts | None) -> None:
        if counts is not None:
            codes = space.encode(counts.rows)  # distinct rows: distinct codes, so += is safe
            totals[position][codes] += counts.totals
            positives[position][codes] += counts.positives

    recount = []
    from_scan = 0
    for index in layout.overlapping(0, layout.fit_end):
        start, stop = layout.offsets[index], layout.offsets[index] + layout.rows[index]
        inside = [position for position, (low, high) in enumerate(ranges) if low <= start and stop <= high]
        if inside and scans[index].counts is not None:
            add(inside[0], scans[index].counts)
            from_scan += 1
        else:
            recount.append(index)
    calls = ((layout.parts[index], layout.offsets[index]) for index in recount)
    # In the table's code space, with no limit on distinct rows: a part whose scan sent no counts
    # back (too many distinct rows, or past the client's budget) is counted in full here.
    for _, counts in run_bounded(client, count_rows, calls, ranges=ranges, space=space):
        for position, part_counts in enumerate(counts):
            add(position, part_counts)
    logger.info(
        "training rows: %d parts counted as they were scanned, %d read again", from_scan, len(recount)
    )
    names = feature_names(len(space.radix))
    merged = []
    for total, positive in zip(totals, positives, strict=True):
        present = np.flatnonzero(total)
        weights = total[present]
        merged.append(
            MergedRows(
                pd.DataFrame(space.decode(present), columns=names, copy=False),
                positive[present] / weights,
                weights,
            )
        )
    return merged[0], merged[1]


def train_on_cluster(
    client: Client, layout: Layout, n_features: int, booster_params: dict[str, Any], params: TrainParams
) -> tuple[xgb.Booster, dict[str, dict[str, list[float]]], tuple[int, int, int]]:
    """``xgboost.dask.train`` on the training rows, stopping early on the validation rows.

    Returns the booster cut to its best round, the per-round evaluation history, and the
    training rows, their positives and the validation rows.
    """
    import dask
    import dask.dataframe as dd
    import xgboost.dask as xgb_dask

    names = feature_names(n_features)
    meta = pd.DataFrame({name: pd.Series(dtype=np.float32) for name in names})
    meta[LABEL_COLUMN] = pd.Series(dtype=np.int8)

    def frame(low: int, high: int) -> Any:
        items = [(layout.parts[index], layout.offsets[index]) for index in layout.overlapping(low, high)]
        # Persisted before X and y are taken from it: both then come from the same partitions.
        return dd.from_map(load_range, items, low=low, high=high, meta=meta, enforce_metadata=False).persist()

    train, validation = frame(0, layout.train_end), frame(layout.train_end, layout.fit_end)
    dtrain = xgb_dask.DaskQuantileDMatrix(client, train[names], train[LABEL_COLUMN])
    dvalid = xgb_dask.DaskQuantileDMatrix(client, validation[names], validation[LABEL_COLUMN], ref=dtrain)
    output = xgb_dask.train(
        client,
        booster_params,
        dtrain,
        num_boost_round=params.num_boost_round,
        evals=[(dtrain, "train"), (dvalid, "validation")],
        early_stopping_rounds=params.early_stopping_rounds if params.early_stopping_rounds > 0 else None,
        verbose_eval=False,
    )
    booster = output["booster"]
    best = getattr(booster, "best_iteration", None)
    if best is not None:
        logger.info("early stopping kept %d of %d rounds", best + 1, booster.num_boosted_rounds())
        booster = booster[: best + 1]
    train_rows, positives, validation_rows = dask.compute(
        train.shape[0], train[LABEL_COLUMN].sum(), validation.shape[0]
    )
    return booster, output["history"], (int(train_rows), int(positives), int(validation_rows))
