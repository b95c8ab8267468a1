"""The predictions CSV that carries the test set from train_model to evaluate_model.

Columns, no index: ``y_test`` (0/1), ``y_pred`` (0/1 at the threshold), ``y_proba`` (probability
of "up"), then ``baseline_proba`` (the training prior, the naive baseline's probability) and,
when a champion was scored on the same rows, ``champion_proba`` and ``champion_pred``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from pystock_training.errors import DataError

REQUIRED_COLUMNS = ("y_test", "y_pred", "y_proba", "baseline_proba")
CHAMPION_COLUMNS = ("champion_proba", "champion_pred")
LABEL_COLUMNS = frozenset({"y_test", "y_pred", "champion_pred"})
PROBABILITY_COLUMNS = frozenset({"y_proba", "baseline_proba", "champion_proba"})


def write_predictions(
    path: str | Path,
    y_test: np.ndarray,
    y_proba: np.ndarray,
    threshold: float,
    baseline_proba: float,
    champion_proba: np.ndarray | None = None,
) -> Path:
    """Write the predictions CSV atomically: a reader sees the old file or the whole new one."""
    path = Path(path)
    columns = {
        "y_test": pa.array(np.asarray(y_test, dtype=np.int8)),
        "y_pred": pa.array((np.asarray(y_proba) >= threshold).astype(np.int8)),
        "y_proba": pa.array(np.asarray(y_proba, dtype=np.float64)),
        "baseline_proba": pa.array(np.full(len(y_test), baseline_proba, dtype=np.float64)),
    }
    if champion_proba is not None:
        columns["champion_proba"] = pa.array(np.asarray(champion_proba, dtype=np.float64))
        columns["champion_pred"] = pa.array((np.asarray(champion_proba) >= threshold).astype(np.int8))
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp file sits in the target folder so the rename stays on one filesystem (atomic).
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            pa_csv.write_csv(table, handle, pa_csv.WriteOptions(quoting_style="none"))
        # mkstemp makes the file owner-only; give it the mode a plain open() would (umask).
        umask = os.umask(0)
        os.umask(umask)
        Path(tmp_name).chmod(0o666 & ~umask)
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read and check a predictions CSV.

    Read batch by batch and checked as it goes, into compact columns (int8 labels, float64
    probabilities): millions of test rows never sit in memory as a whole Arrow table beside a
    pandas copy of it.

    Raises:
        DataError: The file is missing or its columns or values are wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such predictions file")
    try:
        reader = pa_csv.open_csv(path)
        names = reader.schema.names
        missing = [column for column in REQUIRED_COLUMNS if column not in names]
        if missing:
            raise DataError(path, f"missing column(s) {', '.join(missing)}")
        present = [column for column in CHAMPION_COLUMNS if column in names]
        if present and len(present) != len(CHAMPION_COLUMNS):
            raise DataError(
                path, f"has {present[0]} without {' and '.join(set(CHAMPION_COLUMNS) - set(present))}"
            )
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for batch in reader:
            for name, column in zip(names, batch.columns, strict=True):
                chunks[name].append(_checked(path, name, column))
    except pa.ArrowException as exc:
        raise DataError(path, f"not a readable predictions CSV ({str(exc).splitlines()[0]})") from exc
    if not chunks[REQUIRED_COLUMNS[0]]:
        raise DataError(path, "no rows")
    return pd.DataFrame({name: np.concatenate(parts) for name, parts in chunks.items()}, copy=False)


def _checked(path: Path, name: str, column: pa.Array) -> np.ndarray:
    """One batch of one column as numpy, after checking its values where the contract says what they are."""
    if name in LABEL_COLUMNS:
        values = column.to_numpy(zero_copy_only=False) if _numeric(column) else None
        if values is None or column.null_count or not np.isin(values, (0, 1)).all():
            raise DataError(path, f"column {name} must hold only 0 and 1")
        return values.astype(np.int8)
    if name in PROBABILITY_COLUMNS:
        values = column.to_numpy(zero_copy_only=False).astype(np.float64) if _numeric(column) else None
        if values is None or not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise DataError(path, f"column {name} must hold probabilities in [0, 1]")
        return values
    return column.to_numpy(zero_copy_only=False)


def _numeric(column: pa.Array) -> bool:
    return pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
