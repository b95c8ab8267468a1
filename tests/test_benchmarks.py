"""The scale benchmark's parts: the data generator, the naive reference and the RSS monitor.

No timing assertions: the machine is shared. The one end-to-end run of benchmarks/scale.py is slow.
"""

from __future__ import annotations

import itertools
import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pandas as pd
import psutil
import pytest
from sklearn.metrics import roc_auc_score

from benchmarks import generate_data
from benchmarks.generate_data import LINE_BYTES, P_UP_AFTER_DOWN, P_UP_AFTER_UP, write_dataset
from benchmarks.naive_reference import naive_reference
from benchmarks.scale import (
    GB,
    MB,
    CommandFailedError,
    Measurement,
    SizeResult,
    csv_records,
    dataset_for,
    markdown_table,
    measure,
    parse_rows,
    table_rows,
)
from pystock_training import config
from pystock_training.data import load_dataset, split_rows
from pystock_training.model import fit, predict_proba
from pystock_training.params import TrainParams
from tests.conftest import PROJECT_ROOT

N_COLUMNS = 15


def read_rows(path: Path) -> np.ndarray:
    return pd.read_csv(path, header=None).to_numpy()


@pytest.mark.parametrize(("n_rows", "chunk_rows"), [(1, 7), (14, 7), (15, 7), (1000, 7), (1000, 999)])
def test_generator_output_is_independent_of_chunk_rows(tmp_path: Path, n_rows: int, chunk_rows: int) -> None:
    whole = write_dataset(tmp_path / "whole.csv", n_rows, seed=3)
    chunked = write_dataset(tmp_path / "chunked.csv", n_rows, seed=3, chunk_rows=chunk_rows)
    assert chunked.read_bytes() == whole.read_bytes()


def test_generator_is_deterministic_per_seed(tmp_path: Path) -> None:
    first = write_dataset(tmp_path / "a.csv", 500, seed=1).read_bytes()
    again = write_dataset(tmp_path / "b.csv", 500, seed=1).read_bytes()
    other = write_dataset(tmp_path / "c.csv", 500, seed=2).read_bytes()
    assert first == again
    assert first != other


def test_generated_rows_are_0_1_sliding_windows_of_one_walk(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "walk.csv", 2_000, chunk_rows=300)
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2_000
    assert {len(line) for line in lines} == {LINE_BYTES}
    rows = read_rows(path)
    assert rows.shape == (2_000, N_COLUMNS)
    assert set(np.unique(rows)) == {0, 1}
    # Row i is flags[i : i + 15], so each row is the one before shifted by a day.
    np.testing.assert_array_equal(rows[1:, :-1], rows[:-1, 1:])


def test_walk_has_the_documented_transition_probabilities() -> None:
    flags = generate_data.walk_flags(np.random.default_rng(0), 400_000, previous=0)
    after_up, after_down = flags[1:][flags[:-1] == 1], flags[1:][flags[:-1] == 0]
    assert after_up.mean() == pytest.approx(P_UP_AFTER_UP, abs=0.005)
    assert after_down.mean() == pytest.approx(P_UP_AFTER_DOWN, abs=0.005)


def test_the_project_loader_accepts_the_generated_file(tmp_path: Path) -> None:
    dataset = load_dataset(write_dataset(tmp_path / "walk.csv", 1_234))
    assert dataset.n_rows == 1_234
    assert dataset.features.shape == (1_234, N_COLUMNS - 1)


def test_a_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    format_rows, calls = generate_data.format_rows, []

    def fail_on_second_chunk(flags: np.ndarray) -> np.ndarray:
        calls.append(len(flags))
        if len(calls) == 2:
            raise OSError("disk full")
        return format_rows(flags)

    monkeypatch.setattr(generate_data, "format_rows", fail_on_second_chunk)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(tmp_path / "walk.csv", 100, chunk_rows=10)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("n_rows", "chunk_rows"), [(0, 10), (10, 0)])
def test_generator_rejects_empty_sizes(tmp_path: Path, n_rows: int, chunk_rows: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        write_dataset(tmp_path / "walk.csv", n_rows, chunk_rows=chunk_rows)


def test_cached_dataset_is_reused(tmp_path: Path) -> None:
    first = dataset_for(tmp_path, 500, seed=0)
    stamp = first.stat().st_mtime_ns
    assert dataset_for(tmp_path, 500, seed=0) == first
    assert first.stat().st_mtime_ns == stamp
    # A file of the wrong size is not trusted.
    first.write_bytes(b"0,1\n")
    assert dataset_for(tmp_path, 500, seed=0).stat().st_size == 500 * LINE_BYTES


@pytest.mark.slow
def test_naive_reference_cli_writes_the_predictions_and_scores_them(tmp_path: Path) -> None:
    data_file = write_dataset(tmp_path / "walk.csv", 5_000)
    predictions_file = tmp_path / "predictions.csv"
    result = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "benchmarks" / "naive_reference.py"),
            f"--data-file={data_file}",
            f"--predictions-file={predictions_file}",
            "--num-boost-round=20",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = pd.read_csv(predictions_file)
    assert list(predictions.columns) == ["y_test", "y_pred", "y_proba"]
    assert len(predictions) == math.ceil(config.TEST_SIZE * 5_000)
    auc = roc_auc_score(predictions["y_test"], predictions["y_proba"])
    assert f"roc_auc {auc:.4f}" in result.stderr


def test_naive_reference_trains_the_pipelines_model(tmp_path: Path) -> None:
    """Same file, same settings: the same test rows, probabilities and metric names as the package."""
    data_file = write_dataset(tmp_path / "walk.csv", 5_000)
    predictions_file = tmp_path / "predictions.csv"
    scores = naive_reference(data_file, predictions_file, num_boost_round=20)
    naive = pd.read_csv(predictions_file)
    assert set(scores) == set(config.METRIC_NAMES)
    assert scores["roc_auc"] == pytest.approx(roc_auc_score(naive["y_test"], naive["y_proba"]))

    dataset = load_dataset(data_file)
    parts = split_rows(dataset.labels)
    features, labels = dataset.features, dataset.labels
    booster = fit(
        features.iloc[parts.train],
        labels[parts.train],
        features.iloc[parts.validation],
        labels[parts.validation],
        TrainParams(num_boost_round=20),
    )
    proba = predict_proba(booster, features.iloc[parts.test])
    np.testing.assert_array_equal(naive["y_test"], labels[parts.test])
    np.testing.assert_allclose(naive["y_proba"], proba, rtol=1e-6)
    np.testing.assert_array_equal(naive["y_pred"], (proba >= config.THRESHOLD).astype(int))


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


@pytest.mark.slow
def test_monitor_sees_a_subprocess_allocation(tmp_path: Path) -> None:
    # A str is filled on creation, so its pages are resident (a zeroed bytearray may not be).
    measurement = measure(python("import time; block = 'x' * (200 * 2**20); time.sleep(1)"), cwd=tmp_path)
    assert measurement.returncode == 0
    assert not measurement.killed
    assert measurement.peak_rss_bytes >= 150 * MB


@pytest.mark.slow
def test_monitor_kills_the_whole_tree_past_the_limit(tmp_path: Path) -> None:
    """The parent stays small; its child allocates 300 MB, so only the tree's sum passes 0.1 GB."""
    pid_file = tmp_path / "child.pid"
    parent = (
        "import pathlib, subprocess, sys; "
        "child = subprocess.Popen([sys.executable, '-c', "
        "\"import time; block = 'x' * (300 * 2**20); time.sleep(120)\"]); "
        "pathlib.Path(sys.argv[1]).write_text(str(child.pid)); child.wait()"
    )
    measurement = measure(python(parent, str(pid_file)), cwd=tmp_path, rss_limit_bytes=int(0.1 * GB))
    assert measurement.killed
    assert measurement.returncode == -signal.SIGKILL
    assert measurement.peak_rss_bytes > 0.1 * GB
    assert measurement.wall_s < 60
    child = int(pid_file.read_text())
    for pid in (measurement.pid, child):
        assert not psutil.pid_exists(pid), f"process {pid} survived the kill"


def test_a_failing_command_fails_loudly_with_its_stderr(tmp_path: Path) -> None:
    with pytest.raises(CommandFailedError, match=r"(?s)exited 1.*no such data"):
        measure(python("import sys; sys.exit('no such data')"), cwd=tmp_path)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (("1000,10000",), [1000, 10000]),
        (("10000", "1000"), [1000, 10000]),
        (("1e6, 10_000,",), [10000, 1000000]),
        (("1000", "1000,100"), [100, 1000]),
    ],
)
def test_parse_rows(values: tuple[str, ...], expected: list[int]) -> None:
    assert parse_rows(values) == expected


@pytest.mark.parametrize("value", ["ten", "0", "-5"])
def test_parse_rows_rejects_non_counts(value: str) -> None:
    with pytest.raises(click.BadParameter, match="row count"):
        parse_rows([value])


def test_table_reports_a_killed_run_instead_of_a_number() -> None:
    done = Measurement(wall_s=10.0, peak_rss_bytes=2 * GB, killed=False, returncode=0, pid=1)
    killed = Measurement(wall_s=30.0, peak_rss_bytes=21 * GB, killed=True, returncode=-9, pid=2)
    cells = table_rows([SizeResult(100, done, done, []), SizeResult(10**8, done, killed, [])], limit_gb=20)
    assert cells[1] == ["100", "10.00", "10.00", "1.00", "2048", "2048", "1.00"]
    assert cells[2] == ["100,000,000", "10.00", "killed after 30.0", "-", "2048", "killed at > 20 GB", "-"]
    record = csv_records([SizeResult(10**8, done, killed, [])])[0]
    assert record["naive_peak_rss_mb"] == record["rss_ratio"] == ""
    assert record["naive_killed"]
    assert not record["pipeline_killed"]
    table = markdown_table(cells).splitlines()
    assert len(table) == 4
    assert len({len(line) for line in table}) == 1


def run_benchmark(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<script>`` with its work folder in ``tmp_path``."""
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / script), f"--work-dir={tmp_path / 'work'}", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_scale_benchmark_end_to_end(tmp_path: Path) -> None:
    output = tmp_path / "results" / "scale.png"
    result = run_benchmark(
        "scale.py", tmp_path, "--rows=2000", "--num-boost-round=5", "--floor-repeats=1", f"--output={output}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| rows " in result.stderr
    assert "wall ratio" in result.stderr
    assert output.stat().st_size > 0
    payload = json.loads(output.with_suffix(".json").read_text())
    [size] = payload["results"]
    assert size["rows"] == 2000
    assert not size["pipeline"]["killed"]
    assert not size["naive"]["killed"]
    assert [step["entry_point"] for step in size["steps"]] == [
        "main",
        "train_model",
        "evaluate_model",
        "register_model",
    ]
    [record] = pd.read_csv(output.with_suffix(".csv")).to_dict("records")
    assert record["rows"] == 2000
    assert record["wall_ratio"] == pytest.approx(record["pipeline_wall_s"] / record["naive_wall_s"], rel=0.01)
    shipped = payload["shipped_data"]
    assert shipped["repeats"] == 1
    assert shipped["floor_s"] > 0
    assert shipped["pipeline_s"] > 0
    assert shipped["gap_s"] == pytest.approx(shipped["pipeline_s"] - shipped["floor_s"])
    assert "start-up floor" in result.stderr
    # Only the cached data file stays behind: the runs' scratch folders are removed.
    assert [path.name for path in (tmp_path / "work").iterdir()] == ["data"]


@pytest.mark.slow
def test_fixed_cost_benchmark_end_to_end(tmp_path: Path) -> None:
    # The original job still runs as a reference, and the pipeline's breakdown covers its run:
    # every process and step on one timeline that ends at the command's wall time.
    output = tmp_path / "fixed_cost.json"
    result = run_benchmark("fixed_cost.py", tmp_path, "--repeats=1", "--rows=0", f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(output.read_text())
    shipped = payload["shipped_data"]
    assert shipped["ratio"] == pytest.approx(shipped["pipeline_s"] / shipped["original_s"])
    assert payload["large"] is None
    spans = shipped["breakdown"]["spans"]
    assert [span["what"] for span in spans][2:5] == ["train_model", "evaluate_model", "register_model"]
    # One after another: each span starts where the one before it ended (or after).
    for before, after in itertools.pairwise(spans):
        assert after["start_s"] >= before["end_s"] - 0.01
    assert spans[-1]["end_s"] == pytest.approx(shipped["breakdown"]["wall_s"])
    for step in spans[2:5]:
        assert step["parts"]["startup"] > 0
    assert "ratio" in result.stderr
    assert [path.name for path in (tmp_path / "work").iterdir()] == []
