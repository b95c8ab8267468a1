"""The shipped data file is what the committed script makes from the committed source."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pystock_training import config
from pystock_training.data import load_dataset
from tests.conftest import PROJECT_ROOT


@pytest.mark.slow
def test_shipped_file_rebuilds_byte_for_byte_from_arch_sp500(tmp_path) -> None:
    output = tmp_path / "data.csv"
    subprocess.run(
        [sys.executable, "scripts/make_dataset.py", "--arch-sp500", "--output", str(output)],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert output.read_bytes() == (PROJECT_ROOT / config.DATA_FILE).read_bytes()


def test_shipped_file_meets_the_data_contract() -> None:
    dataset = load_dataset(PROJECT_ROOT / config.DATA_FILE)
    # 5,031 trading days of 1999-2018 give 5,031 - 14 windows of 15 days.
    assert dataset.features.shape == (5017, 14)
    assert set(np.unique(dataset.features.to_numpy())) == {0.0, 1.0}
    # Each window is the previous one shifted by a day.
    features = dataset.features.to_numpy()
    assert np.array_equal(features[1:, :-1], features[:-1, 1:])
    assert np.array_equal(features[1:, -1], dataset.labels[:-1])
