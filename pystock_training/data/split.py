"""Split the rows of a training table into train, validation and test parts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from pystock_training import config
from pystock_training.errors import DataError
from pystock_training.params import float_problem

# Row positions: a slice for the time split (a view, no copy at 100M rows) or an index array.
Rows = slice | np.ndarray


@dataclass(frozen=True)
class Split:
    """Row positions of the three parts; validation is carved from the training part."""

    train: Rows
    validation: Rows
    test: Rows


def split_rows(
    labels: np.ndarray,
    *,
    split: str = config.SPLIT,
    test_size: float = config.TEST_SIZE,
    random_state: int = config.RANDOM_STATE,
    validation_fraction: float = config.VALIDATION_FRACTION,
    source: str | Path = "data",
) -> Split:
    """Split rows into train, validation and test parts.

    ``time`` keeps file order: the last ``test_size`` of rows are the test set, and the last
    ``validation_fraction`` of the rest validate. Overlapping sliding windows in a random split
    would put near-copies of test rows in training. ``random`` is the original 67/33 shuffle;
    its test rows are kept in file order, which the gate's block bootstrap relies on.

    Raises:
        DataError: A part would be empty or the train or test part would hold a single class.
    """
    if split not in config.SPLITS:
        raise DataError(source, f"unknown split {split!r}, expected one of {', '.join(config.SPLITS)}")
    problem = float_problem("test_size", test_size)
    if problem:
        raise DataError(source, problem)
    n_rows = len(labels)
    train_end, n_fit = time_split_bounds(n_rows, test_size, validation_fraction, source)
    n_validation = n_fit - train_end

    if split == "time":
        parts = Split(
            train=slice(0, n_fit - n_validation),
            validation=slice(n_fit - n_validation, n_fit),
            test=slice(n_fit, n_rows),
        )
    else:
        fit, test = _random_fit_test(n_rows, test_size, random_state)
        train, validation = train_test_split(fit, test_size=n_validation, random_state=random_state)
        parts = Split(train=train, validation=validation, test=test)

    for part in ("train", "test"):
        classes = np.unique(labels[getattr(parts, part)])
        if len(classes) < 2:
            raise DataError(
                source,
                f"the {part} part of the {split} split holds only label {classes[0]}; "
                "it needs both classes (use more rows or another test_size)",
            )
    return parts


def time_split_bounds(
    n_rows: int,
    test_size: float,
    validation_fraction: float = config.VALIDATION_FRACTION,
    source: str | Path = "data",
) -> tuple[int, int]:
    """Where the training part ends and the test part starts, as row positions, for both splits' sizes.

    Raises:
        DataError: A part would be empty.
    """
    # Same rounding as sklearn's train_test_split, so both splits size the test set alike.
    n_test = math.ceil(test_size * n_rows)
    n_fit = n_rows - n_test
    n_validation = math.ceil(validation_fraction * n_fit)
    if n_test < 1 or n_fit - n_validation < 1 or n_validation < 1:
        raise DataError(source, f"{n_rows} rows are too few for test_size={test_size}")
    return n_fit - n_validation, n_fit


def holdout_rows(n_rows: int, *, split: str, test_size: float, random_state: int) -> Rows:
    """The test part's row positions that ``split_rows`` gives a table of ``n_rows`` rows."""
    if split == "time":
        return slice(n_rows - math.ceil(test_size * n_rows), n_rows)
    return _random_fit_test(n_rows, test_size, random_state)[1]


def _random_fit_test(n_rows: int, test_size: float, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    fit, test = train_test_split(np.arange(n_rows), test_size=test_size, random_state=random_state)
    return fit, np.sort(test)
