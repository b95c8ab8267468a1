"""The validated training table, and the checks every reader's rows pass through.

Features are held as one compact row-major matrix: int8 when every value is a whole number that
fits (the up/down flags: 1 byte a cell, 8x less than pandas' int64 default), otherwise float32
(fractions, large values, and missing values, which XGBoost takes as NaN). The label becomes int8.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pystock_training import config
from pystock_training.digest import FileDigest
from pystock_training.errors import DataError

LABEL_COLUMN = "label"


@dataclass(frozen=True)
class Dataset:
    """A validated training table.

    Attributes:
        path: The file it was read from, resolved (for parts: the folder, or the glob or URL).
        features: Columns named ``f0..f{n-1}`` whatever the file called them, so a model's
            signature does not depend on the file's header; all int8 or all float32 (see the
            module docstring), backed by one C-ordered matrix that ``features.to_numpy()``
            returns without a copy.
        labels: int8 array of 0/1.
        digest: The sha256 and size of the bytes these rows were parsed from, taken in the same
            pass, with the prefix digests asked for.
    """

    path: Path | str
    features: pd.DataFrame
    labels: np.ndarray
    digest: FileDigest

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return len(self.labels)


def feature_names(n_features: int) -> list[str]:
    """Stable positional feature names."""
    return [f"f{i}" for i in range(n_features)]


@dataclass(frozen=True)
class Layout:
    """Where the data sits in the file, to point error messages at what a user can find."""

    skip_lines: int | None  # CSV lines before the first data row; None for Parquet (rows)
    column_offset: int = 0  # file columns before the first feature (1 with an index column)

    def where(self, path: Path | str, row: int) -> str:
        if self.skip_lines is None or not isinstance(path, Path):
            return f"row {row + 1}"
        return f"line {csv_line_of_row(path, row, self.skip_lines)}"

    def column(self, feature: int) -> str:
        return f"column {self.column_offset + feature + 1}"


def csv_line_of_row(path: Path, row: int, skip_lines: int) -> int:
    """The 1-based file line of a data row, counting the empty lines pyarrow skips."""
    seen = -1
    with path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line_no > skip_lines and line.rstrip(b"\r\n"):
                seen += 1
                if seen == row:
                    return line_no
    return row + 1 + skip_lines


def validate_table(
    path: Path, table: pa.Table, layout: Layout, digest: FileDigest, *, whole: bool = True
) -> Dataset:
    """Check a table of features ``f0..`` and ``LABEL_COLUMN`` and make it a ``Dataset``.

    ``whole=False`` is for one part of a partitioned table: every row is checked, but the checks
    of the table as a whole (enough rows, both classes) are left to the caller.

    Raises:
        DataError: The rows break the data contract (labels, row count, infinite values).
    """
    _check_row_count(path, table.num_rows, whole)
    label = table[LABEL_COLUMN]
    if label.null_count == table.num_rows and layout.skip_lines is not None:
        # A label empty on every line is not a missing label but a CSV whose lines end with a
        # comma, which adds an empty last column.
        raise DataError(
            path,
            "the last column is empty on every line (does each line end with a trailing comma?); "
            "the label must be the last column",
        )
    if label.null_count:
        raise DataError(path, f"missing label at {layout.where(path, _first_true(pc.is_null(label)))}")
    columns = table.drop_columns([LABEL_COLUMN]).columns
    return checked_dataset(
        path, _feature_matrix(columns, table.num_rows), label.to_numpy(), layout, digest, whole=whole
    )


def _check_row_count(path: Path, n_rows: int, whole: bool = True) -> None:
    if n_rows == 0:
        raise DataError(path, "no data rows")
    if whole and n_rows < config.MIN_ROWS:
        raise DataError(path, f"too few rows: {n_rows}, need at least {config.MIN_ROWS}")


def checked_dataset(
    path: Path | str,
    matrix: np.ndarray,
    label_values: np.ndarray,
    layout: Layout,
    digest: FileDigest,
    *,
    whole: bool = True,
) -> Dataset:
    """Check the labels and wrap the feature matrix, without copying it (``whole``: see above)."""
    _check_row_count(path, len(label_values), whole)
    bad = np.flatnonzero((label_values != 0) & (label_values != 1))
    if len(bad):
        row = int(bad[0])
        raise DataError(path, f"label {label_values[row]:g} at {layout.where(path, row)}, expected 0 or 1")
    labels = label_values.astype(np.int8, copy=False)
    if whole and labels.min() == labels.max():
        raise DataError(path, f"every label is {labels[0]}; training needs both classes")
    if matrix.dtype.kind == "f":
        # Checked on the float32 matrix, not the file's values: a float64 beyond float32's range
        # (Parquet) becomes inf only here. A column at a time: no full-size temporary.
        for position in range(matrix.shape[1]):
            infinite = np.flatnonzero(np.isinf(matrix[:, position]))
            if len(infinite):
                where = layout.where(path, int(infinite[0]))
                raise DataError(path, f"infinite value at {where}, {layout.column(position)}")
    features = pd.DataFrame(matrix, columns=feature_names(matrix.shape[1]), copy=False)
    return Dataset(path=path, features=features, labels=labels, digest=digest)


def _feature_matrix(columns: list[pa.ChunkedArray], n_rows: int) -> np.ndarray:
    """One row-major matrix of all features: int8 when every value fits exactly, else float32.

    Filled a column at a time, so the only temporaries are one column's worth.
    """
    compact = np.empty((n_rows, len(columns)), dtype=np.int8)
    for position, column in enumerate(columns):
        if column.null_count:
            break
        as_int8 = exact_int8(column.to_numpy())
        if as_int8 is None:
            break
        compact[:, position] = as_int8
    else:
        return compact
    del compact
    wide = np.empty((n_rows, len(columns)), dtype=np.float32)
    for position, column in enumerate(columns):
        # Nulls become NaN, which XGBoost treats as missing; values beyond float32 become inf,
        # which checked_dataset then reports.
        with np.errstate(over="ignore"):
            wide[:, position] = column.to_numpy(zero_copy_only=False)
    return wide


def exact_int8(values: np.ndarray) -> np.ndarray | None:
    """``values`` as int8 when every one is a whole number that fits, else None."""
    with np.errstate(invalid="ignore"):  # NaN and out-of-range floats cast to junk, caught below
        as_int8 = values.astype(np.int8)
    # A wrapped large value or a fraction (or NaN) compares unequal to itself in int8.
    return as_int8 if np.array_equal(as_int8, values) else None


def _first_true(mask: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))[0])
