"""The upstream feature recipe: up/down flags and sliding windows, checked against hand-made examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pystock_training.data import load_dataset
from pystock_training.features import GOING_UP_THRESHOLD, WINDOW, going_up, make_windows

# 16 days of flags, written out so every window below can be read off by eye.
DAYS_16 = [1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0]


def test_threshold_and_window_are_the_original_recipe() -> None:
    assert GOING_UP_THRESHOLD == 0.00001
    assert WINDOW == 15


@pytest.mark.parametrize(
    ("open_", "close", "expected"),
    [
        (10.0, 11.0, 1),  # +10%
        (10.0, 9.0, 0),  # -10%
        (10.0, 10.0, 0),  # flat is not up
        # (100001 - 100000) / 100000 is exactly the double 0.00001: at the threshold is not up.
        (100000.0, 100001.0, 0),
        (100000.0, 100001.5, 1),  # 1.5e-5, just above
        (100000.0, 100000.5, 0),  # 5e-6, a rise too small to count
        (50.0, 50.01, 1),  # 2e-4
    ],
)
def test_going_up_threshold(open_: float, close: float, expected: int) -> None:
    flags = going_up(np.array([open_]), np.array([close]))

    assert flags.tolist() == [expected]


def test_going_up_is_elementwise_int8() -> None:
    flags = going_up([10.0, 10.0, 20.0, 100000.0], [11.0, 9.0, 20.0, 100001.0])

    assert flags.dtype == np.int8
    assert flags.tolist() == [1, 0, 0, 0]


def test_going_up_is_relative_to_open() -> None:
    # The same +0.5 move is a 5% rise on 10 but only 5e-6 on 100000.
    flags = going_up(np.array([10.0, 100000.0]), np.array([10.5, 100000.5]))

    assert flags.tolist() == [1, 0]


def test_sixteen_days_make_two_windows() -> None:
    frame = make_windows(np.array(DAYS_16))

    assert frame.shape == (2, 15)
    assert list(frame.columns) == list(range(15))
    assert frame.iloc[0].tolist() == [1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1]
    assert frame.iloc[1].tolist() == [0, 0, 1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0]
    # The label (last column) is the day after the 14 feature days.
    assert frame[14].tolist() == [1, 0]
    assert (frame.dtypes == np.int8).all()


@pytest.mark.parametrize(
    ("flags", "window", "expected"),
    [
        ([1, 0, 1, 1], 3, [[1, 0, 1], [0, 1, 1]]),
        ([1, 0, 1, 1], 4, [[1, 0, 1, 1]]),
        ([0, 1], 1, [[0], [1]]),
        ([1, 1, 0, 0, 1], 2, [[1, 1], [1, 0], [0, 0], [0, 1]]),
    ],
)
def test_make_windows_by_hand(flags: list[int], window: int, expected: list[list[int]]) -> None:
    assert make_windows(np.array(flags), window=window).to_numpy().tolist() == expected


def test_exactly_one_window_of_days() -> None:
    frame = make_windows(np.array(DAYS_16[:15]))

    assert frame.to_numpy().tolist() == [DAYS_16[:15]]


@pytest.mark.parametrize(("n_days", "window"), [(14, 15), (0, 15), (2, 3)])
def test_too_few_days_raise(n_days: int, window: int) -> None:
    with pytest.raises(ValueError, match=rf"need at least {window} days, got {n_days}"):
        make_windows(np.ones(n_days, dtype=np.int8), window=window)


def test_windows_do_not_alias_each_other() -> None:
    # A strided view would let one write change two rows; the frame must own its data.
    frame = make_windows(np.array(DAYS_16))
    frame.iloc[0, 1] = 9

    assert frame.iloc[1, 0] == 0


def test_recipe_output_written_the_upstream_way_loads(tmp_path: Path) -> None:
    opens = np.array([10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0] * 6)
    closes = np.array([11.0, 9.0, 10.0, 12.0, 8.0, 10.5, 9.5, 10.0] * 6)
    flags = going_up(opens, closes)
    assert flags[:8].tolist() == [1, 0, 0, 1, 0, 1, 0, 0]
    frame = make_windows(flags)
    path = tmp_path / "upstream.csv"
    frame.to_csv(path)  # the upstream job's call: default index and header

    dataset = load_dataset(path)

    assert dataset.n_rows == len(flags) - 14
    # The recipe's flags are whole numbers: they load as int8, equal to what was written.
    assert (dataset.features.dtypes == np.int8).all()
    np.testing.assert_array_equal(dataset.features.to_numpy(), frame.iloc[:, :14].to_numpy())
    np.testing.assert_array_equal(dataset.labels, frame[14].to_numpy())
    pd.testing.assert_index_equal(dataset.features.columns, pd.Index([f"f{i}" for i in range(14)]))
