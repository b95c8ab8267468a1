"""evaluate_model on a directory of parts, from the train run's artifact, and in bounded memory."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pystock_training import metrics
from pystock_training.errors import DataError
from pystock_training.handoff import read_predictions, write_predictions
from pystock_training.predictions_stream import bootstrap_cis, summarize
from pystock_training.steps.evaluate_model import compare_champion, evaluate_model, lift_ci
from pystock_training.steps.train_model import train_model
from tests.conftest import PROJECT_ROOT

PRIOR = 0.47


def predictions(n_rows: int, *, champion_from: int | None = None, distinct: int = 16_384, seed: int = 0):
    """Labels and probabilities as a model of 14 binary flags gives them (``distinct`` values at most)."""
    rng = np.random.default_rng(seed)
    table = 1 / (1 + np.exp(-rng.normal(0, 0.6, distinct)))
    codes = rng.integers(0, distinct, n_rows)
    y = (rng.random(n_rows) < table[codes]).astype(np.int8)
    champion = None
    if champion_from is not None:
        champion = np.clip(table[codes] + rng.normal(0, 0.05, n_rows), 0, 1)
        champion[:champion_from] = np.nan
    return y, table[codes], champion


def write_as_parts(folder: Path, sizes: list[int], y, y_proba, champion) -> Path:
    """The rows cut into parts of ``sizes`` rows, each a complete predictions CSV."""
    folder.mkdir(parents=True)
    start = 0
    for number, size in enumerate(sizes):
        rows = slice(start, start + size)
        write_predictions(
            folder / f"part-{number:05d}.csv",
            y[rows],
            y_proba[rows],
            0.5,
            PRIOR,
            champion_proba=None if champion is None else champion[rows],
        )
        start += size
    assert start == len(y)
    return folder


def in_memory(path: Path, metric: str):
    """The lift's and the champion's CIs as the step computed them with every row in memory."""
    frame = read_predictions(path)
    y, y_pred, y_proba = (frame[name].to_numpy() for name in ("y_test", "y_pred", "y_proba"))
    results = metrics.evaluate_predictions(metrics.group_predictions(y, y_pred, y_proba), PRIOR)
    lift = lift_ci(y, y_pred, y_proba, PRIOR, metric, results["lift"][metric])
    champion = None
    if "champion_proba" in frame.columns:
        champion = compare_champion(frame, y, y_pred, y_proba, metric, results["model"])
    return results, lift, champion


@pytest.mark.parametrize(
    ("n_rows", "champion_from", "metric", "distinct"),
    [
        (3_000, 1_000, "roc_auc", 300),
        # Past MAX_RESAMPLE_ROWS: m-out-of-n resamples of 20,000 rows, blocks that wrap.
        (60_000, 0, "roc_auc", 16_384),
        (60_000, 25_000, "log_loss", 16_384),
        (5_000, 2_000, "accuracy", 1_000),
        # Few positives: single-class resamples are drawn again, in a second round.
        (40, None, "roc_auc", 30),
    ],
)
def test_streamed_intervals_equal_the_in_memory_ones(
    tmp_path: Path, n_rows: int, champion_from: int | None, metric: str, distinct: int
) -> None:
    y, y_proba, champion = predictions(n_rows, champion_from=champion_from, distinct=distinct)
    if n_rows == 40:
        y = np.zeros(40, dtype=np.int8)
        y[[3, 30]] = 1
    path = write_predictions(tmp_path / "p.csv", y, y_proba, 0.5, PRIOR, champion_proba=champion)
    results, lift, champion_result = in_memory(path, metric)

    summary = summarize(path)
    champion_point = champion_result.ci.diff if champion_result and champion_result.ci else None
    streamed_lift, streamed_champion = bootstrap_cis(summary, metric, lift.diff, champion_point)

    assert streamed_lift == lift
    if champion_point is not None:
        assert replace(streamed_champion, test_rows=n_rows) == champion_result.ci
    assert metrics.counted_metrics(summary.model) == pytest.approx(results["model"], rel=1e-12)


def evaluate_run(path: Path, **kwargs) -> tuple[dict[str, float], dict]:
    flat = evaluate_model(predictions_file=path, **kwargs)
    run_id = mlflow.last_active_run().info.run_id
    return flat, mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation.json")


@pytest.mark.slow
def test_a_directory_of_parts_evaluates_as_the_file_of_its_rows(tmp_path: Path, tracking_uri: str) -> None:
    y, y_proba, champion = predictions(30_000, champion_from=8_000)
    whole = write_predictions(tmp_path / "whole.csv", y, y_proba, 0.5, PRIOR, champion_proba=champion)
    parts = write_as_parts(tmp_path / "parts", [9_000, 0, 12_345, 8_655], y, y_proba, champion)

    from_file, file_record = evaluate_run(whole)
    from_parts, parts_record = evaluate_run(parts)

    assert from_parts == from_file
    assert parts_record == file_record
    assert from_parts["champion_rows_compared"] == 22_000
    assert from_parts["lift_roc_auc_ci_low"] < from_parts["lift_roc_auc"] < from_parts["lift_roc_auc_ci_high"]
    assert "approximation" not in parts_record


def test_too_many_distinct_probabilities_are_counted_on_a_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cap lowered so a small file crosses it; the grid is the one used past 2M values.
    monkeypatch.setattr(metrics, "MAX_GROUPS", 5_000)
    rng = np.random.default_rng(3)
    y_proba = rng.random(40_000)
    y = (rng.random(40_000) < y_proba).astype(np.int8)
    path = write_predictions(tmp_path / "p.csv", y, y_proba, 0.5, PRIOR)
    exact = metrics.classification_metrics(y, (y_proba >= 0.5).astype(np.int8), y_proba)

    summary = summarize(path)
    counted = metrics.counted_metrics(summary.model)

    assert (
        summary.model.approximate
        and "distinct (label, prediction, probability) rows" in summary.approximation
    )
    assert len(summary.model.predictions().y_true) <= 4 * (metrics.PROBABILITY_GRID + 1)
    assert counted["log_loss"] == pytest.approx(exact["log_loss"], rel=1e-12)
    assert counted["accuracy"] == exact["accuracy"] and counted["mcc"] == pytest.approx(exact["mcc"])
    assert counted["roc_auc"] == pytest.approx(exact["roc_auc"], abs=1e-4)
    assert counted["average_precision"] == pytest.approx(exact["average_precision"], abs=1e-4)
    # The bootstrap reads the exact probabilities back: the same interval as in memory.
    _, lift, _ = in_memory(path, "roc_auc")
    assert bootstrap_cis(summary, "roc_auc", lift.diff, None)[0] == lift


# The train run's artifact when the path is not on this machine.


@pytest.fixture
def own_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TMPDIR of the test's own, to see what scratch space is left behind."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return folder


@pytest.mark.slow
def test_evaluate_reads_the_train_runs_artifact_when_the_file_is_elsewhere(
    tmp_path: Path, tracking_uri: str, signal_csv: Path, own_tmpdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written = tmp_path / "on-the-train-host" / "p.csv"
    trained = train_model(data_file=signal_csv, predictions_file=written, num_boost_round=10)
    local, _ = evaluate_run(written, train_run_id=trained.run_id)
    elsewhere = tmp_path / "not-on-this-host" / "p.csv"

    with caplog.at_level(logging.INFO, logger="pystock_training.steps.evaluate_model"):
        fetched, _ = evaluate_run(elsewhere, train_run_id=trained.run_id)

    assert fetched == local
    assert (
        f"predictions_file {elsewhere} is not on this machine: reading train run {trained.run_id}"
        in caplog.text
    )
    # The download went to private scratch space, removed afterwards.
    assert list(own_tmpdir.iterdir()) == []
    # The recorded sha256 still applies to the artifact.
    run = MlflowClient().get_run(mlflow.last_active_run().info.run_id)
    assert run.data.tags["pystock.predictions_sha256"]


@pytest.mark.slow
def test_evaluate_reads_parts_from_the_artifact_and_says_when_there_is_none(
    tmp_path: Path, tracking_uri: str, own_tmpdir: Path
) -> None:
    y, y_proba, champion = predictions(5_000, champion_from=1_000)
    parts = write_as_parts(tmp_path / "parts", [2_000, 3_000], y, y_proba, champion)
    # A finished run with the parts as its predictions artifact, as a dask train run logs them.
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(parts), "predictions")
    with mlflow.start_run() as bare:
        pass
    local, _ = evaluate_run(parts)

    fetched, _ = evaluate_run(tmp_path / "elsewhere", train_run_id=run.info.run_id)

    assert fetched == local
    assert list(own_tmpdir.iterdir()) == []
    with pytest.raises(DataError, match=r"elsewhere: no such predictions file, nor a 'predictions' artifact"):
        evaluate_model(predictions_file=tmp_path / "elsewhere", train_run_id=bare.info.run_id)
    assert list(own_tmpdir.iterdir()) == []


# Memory: the whole columns are never held.

MEMORY_ROWS = 6_000_000
# Streamed, the step's process peaks at about 0.6 GB here (0.25 GB of it MLflow, sklearn,
# matplotlib and pandas); holding these 6M rows' columns whole and grouping them took it to
# 1.17 GB.
MAX_RSS_MB = 800

CHILD = """
import sys
import mlflow
mlflow.set_tracking_uri(sys.argv[2])
from pystock_training.steps.evaluate_model import evaluate_model
evaluate_model(predictions_file=sys.argv[1])
# The peak of this process's own memory: VmHWM starts afresh at exec, whereas ru_maxrss keeps
# the forking parent's peak (pytest's, with the 6M rows it generated) across exec.
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


@pytest.fixture(scope="module")
def big_predictions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    y, y_proba, champion = predictions(MEMORY_ROWS, champion_from=MEMORY_ROWS // 3)
    folder = tmp_path_factory.mktemp("big")
    write_as_parts(folder / "parts", [MEMORY_ROWS // 4] * 4, y, y_proba, champion)
    write_predictions(folder / "whole.csv", y, y_proba, 0.5, PRIOR, champion_proba=champion)
    return folder


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak from /proc")
@pytest.mark.parametrize("form", ["whole.csv", "parts"])
def test_evaluate_stays_in_bounded_memory(big_predictions: Path, tmp_path: Path, form: str) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(big_predictions / form), f"sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    peak_mb = int(result.stdout.split("VmHWM:")[1].split()[0]) / 1024  # reported in kB
    assert peak_mb < MAX_RSS_MB, f"evaluate_model peaked at {peak_mb:.0f} MB on {MEMORY_ROWS:,} rows"
    assert pd.read_csv(big_predictions / "parts" / "part-00000.csv", nrows=1).shape[1] == 6
