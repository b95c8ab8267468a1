"""Distinct feature rows: train and predict once per distinct row instead of once per row.

The pyStock table has 14 up/down flags, so however many rows it holds, at most 2**14 = 16,384
of them differ. XGBoost's logistic loss has a gradient linear in the label, so the distinct
rows, each weighted by how often it occurs and labelled with its mean label, give every tree
node the same gradient and hessian sums as the full table: the same trees, the same early
stopping round and the same predictions (to float32 rounding), at a cost that no longer grows
with the rows. The hist method's bins are the same too, because an int8 column holds at most
256 distinct values, XGBoost's default ``max_bin``, and each becomes its own bin.

Only int8 features qualify (the loader makes whole-number features int8); a float table, or one
whose rows hardly repeat, is used row by row as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

# The code table has one slot per possible row; 4M slots is a 16 MB count array.
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

    def weights(self) -> np.ndarray | None:
        """How many original rows each distinct row stands for (None: one each)."""
        if self.inverse is None:
            return None
        return np.bincount(self.inverse, minlength=len(self.rows))

    def labels(self, labels: np.ndarray) -> np.ndarray:
        """The mean 0/1 label of the original rows behind each distinct row."""
        if self.inverse is None:
            return labels
        return np.bincount(self.inverse, weights=labels, minlength=len(self.rows)) / self.weights()

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
    low = matrix.min(axis=0).astype(np.int64)
    radix = matrix.max(axis=0).astype(np.int64) - low + 1
    n_codes = math.prod(int(size) for size in radix)
    if n_codes > MAX_CODES:
        return unmerged
    strides = np.concatenate([[1], np.cumprod(radix[:-1])]).astype(np.int64)
    codes = np.zeros(len(matrix), dtype=np.int32)
    for column, (offset, stride) in enumerate(zip(low, strides, strict=True)):
        codes += (matrix[:, column].astype(np.int32) - int(offset)) * int(stride)
    present = np.flatnonzero(np.bincount(codes, minlength=n_codes))
    if len(present) * MIN_REPEATS > len(matrix):
        return unmerged
    slot = np.empty(n_codes, dtype=np.int32)
    slot[present] = np.arange(len(present), dtype=np.int32)
    rows = np.empty((len(present), matrix.shape[1]), dtype=np.int8)
    for column, (offset, stride, size) in enumerate(zip(low, strides, radix, strict=True)):
        rows[:, column] = present // stride % size + offset
    return DistinctRows(pd.DataFrame(rows, columns=features.columns, copy=False), slot[codes])
