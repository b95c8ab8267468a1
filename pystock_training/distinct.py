"""Distinct feature rows: train and predict once per distinct row instead of once per row.

The pyStock table has 14 up/down flags, so however many rows it holds, at most 2**14 = 16,384
of them differ. XGBoost's logistic loss has a gradient linear in the label, so the distinct
rows, each weighted by how often it occurs and labelled with its mean label, give every tree
node the same gradient and hessian sums as the full table, up to float rounding (the same
numbers added in another order), at a cost that does not grow with the rows. The hist method's
bins are the same too: an int8 column holds at most 256 distinct values, XGBoost's default
``max_bin``, and each gets a bin of its own, weighted or not.

So with a fixed number of rounds the trees are the same and predictions agree to about 1e-7.
Early stopping compares validation losses, and where the loss is flat to that precision the
best round can come out a few rounds apart: a review measured 85 against 88 rounds on a
contrived table (two columns of 256 values, random split, depth 6). On tables shaped like the
product (14 flags, 100k to 3M rows, both splits) every trial stopped at the same round, and
either model is as good as the other on the validation rows, to that precision.

Only int8 features qualify (the loader makes whole-number features int8); a float table, or one
whose rows hardly repeat, is used row by row as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

# The code table has one slot per possible row: at 4M slots, 32 MB of counts and 16 MB of slots.
MAX_CODES = 1 << 22
# Below this many rows per distinct row the bookkeeping costs about what it saves.
MIN_REPEATS = 2


@dataclass(frozen=True)
class DistinctRows:
    """A feature frame's distinct rows and, for every original row, which one it is.

    ``inverse`` is None when no rows were merged: ``rows`` is then the frame itself, weights
    are all one and nothing needs expanding, so callers have one code path either way.
    """

    rows: pd.DataFrame
    inverse: np.ndarray | None

    @cached_property
    def weights(self) -> np.ndarray | None:
        """How many original rows each distinct row stands for (None: one each)."""
        if self.inverse is None:
            return None
        return np.bincount(self.inverse, minlength=len(self.rows))

    def labels(self, labels: np.ndarray) -> np.ndarray:
        """The mean 0/1 label of the original rows behind each distinct row."""
        if self.inverse is None:
            return labels
        return np.bincount(self.inverse, weights=labels, minlength=len(self.rows)) / self.weights

    def expand(self, values: np.ndarray) -> np.ndarray:
        """Per-distinct-row values back to one per original row, in the original order."""
        values = np.asarray(values)
        return values if self.inverse is None else values[self.inverse]

    def predict(self, predict: Callable[[pd.DataFrame], np.ndarray]) -> np.ndarray:
        """``predict`` on the distinct rows, expanded to one value per original row."""
        return self.expand(predict(self.rows))


def distinct_rows(features: pd.DataFrame) -> DistinctRows:
    """Merge repeated rows when the features are int8 and rows repeat; otherwise keep them all.

    Each row gets a mixed-radix code (column by column, so the only temporaries are one int32
    column and the codes), and a count per code finds the rows present without sorting.
    """
    unmerged = DistinctRows(features, None)
    matrix = features.to_numpy()
    if matrix.dtype != np.int8 or matrix.ndim != 2 or len(matrix) == 0:
        return unmerged
    space = CodeSpace.of(*column_range(matrix))
    if space is None:
        return unmerged
    codes = space.encode(matrix)
    present = np.flatnonzero(np.bincount(codes, minlength=space.n_codes))
    if len(present) * MIN_REPEATS > len(matrix):
        return unmerged
    slot = np.empty(space.n_codes, dtype=np.int32)
    slot[present] = np.arange(len(present), dtype=np.int32)
    rows = pd.DataFrame(space.decode(present), columns=features.columns, copy=False)
    return DistinctRows(rows, slot[codes])


# Rows reduced side by side: numpy reduces a narrow int8 matrix down its columns about ten times
# slower than a wide one, so blocks of this many rows are laid side by side first.
_RANGE_BLOCK = 64


def column_range(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's minimum and maximum of a non-empty 2-D matrix, as ``matrix.min(axis=0)`` would give."""
    n_rows, n_columns = matrix.shape
    whole = n_rows - n_rows % _RANGE_BLOCK
    if not matrix.flags.c_contiguous or whole == 0:
        return matrix.min(axis=0), matrix.max(axis=0)
    # A free view: each row of it holds _RANGE_BLOCK consecutive rows of the matrix.
    wide = matrix[:whole].reshape(-1, n_columns * _RANGE_BLOCK)
    low = wide.min(axis=0).reshape(_RANGE_BLOCK, n_columns).min(axis=0)
    high = wide.max(axis=0).reshape(_RANGE_BLOCK, n_columns).max(axis=0)
    if whole < n_rows:
        low = np.minimum(low, matrix[whole:].min(axis=0))
        high = np.maximum(high, matrix[whole:].max(axis=0))
    return low, high


@dataclass(frozen=True)
class CodeSpace:
    """Mixed-radix codes of int8 rows: column ``j`` is digit ``j`` in base ``high[j] - low[j] + 1``."""

    low: np.ndarray
    radix: np.ndarray

    @classmethod
    def of(cls, low: np.ndarray, high: np.ndarray) -> CodeSpace | None:
        """The code space of rows between ``low`` and ``high`` per column; None beyond ``MAX_CODES``."""
        low = np.asarray(low, dtype=np.int64)
        radix = np.asarray(high, dtype=np.int64) - low + 1
        if math.prod(int(size) for size in radix) > MAX_CODES:
            return None
        return cls(low, radix)

    @property
    def n_codes(self) -> int:
        return math.prod(int(size) for size in self.radix)

    @property
    def strides(self) -> np.ndarray:
        return np.concatenate([[1], np.cumprod(self.radix[:-1])]).astype(np.int64)

    def encode(self, matrix: np.ndarray) -> np.ndarray:
        """Each row's code, as int32, a column at a time."""
        codes = np.zeros(len(matrix), dtype=np.int32)
        for column, (offset, stride) in enumerate(zip(self.low, self.strides, strict=True)):
            codes += (matrix[:, column].astype(np.int32) - int(offset)) * int(stride)
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """The int8 rows of ``codes``, in their order."""
        rows = np.empty((len(codes), len(self.radix)), dtype=np.int8)
        for column, (offset, stride, size) in enumerate(zip(self.low, self.strides, self.radix, strict=True)):
            rows[:, column] = codes // stride % size + offset
        return rows
