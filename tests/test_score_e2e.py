"""End to end: a real `mlflow run . -e score --env-manager local` against a temp SQLite registry."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pystock_training import config
from pystock_training.steps.score import TAG_OUTPUT_FILE
from tests.conftest import PROJECT_ROOT, signal_frame, subprocess_env
from tests.test_pipeline_e2e import mlflow_run
from tests.test_score import expected_proba, fit_booster, register_booster, sklearn_metrics

pytestmark = pytest.mark.slow


def score_runs(client: MlflowClient):
    return [
        run
        for run in client.search_runs(["0"], max_results=1000)
        if run.data.tags.get("mlflow.project.entryPoint") == "score"
    ]


def test_score_entry_point_pins_the_champion_and_writes_every_row(tmp_path, tracking_uri) -> None:
    booster = fit_booster(seed=0)
    register_booster(fit_booster(seed=1, rounds=5))
    register_booster(booster, alias=config.ALIAS_CHAMPION)  # version 2 is @champion
    frame = signal_frame(n_rows=2000, seed=4)
    source = tmp_path / "upstream.csv"
    frame.to_csv(source)  # the upstream job's format: index column, header ,0,1,...,14
    output = tmp_path / "scored.csv"

    result = mlflow_run(
        tmp_path, tracking_uri, "-e", "score", "-P", f"input_file={source}", "-P", f"output_file={output}"
    )

    assert result.returncode == 0, result.stderr[-3000:]
    scored = pd.read_csv(output)
    proba = expected_proba(booster, frame.iloc[:, :14].to_numpy())
    np.testing.assert_array_equal(scored["y_proba"].to_numpy(), proba)
    np.testing.assert_array_equal(scored["y_pred"].to_numpy(), (proba >= 0.5).astype(int))
    np.testing.assert_array_equal(scored["y_true"].to_numpy(), frame.iloc[:, 14].to_numpy())
    (run,) = score_runs(MlflowClient(tracking_uri))
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "score"
    assert run.data.tags[config.TAG_MODEL_VERSION] == "2"
    assert run.data.tags[config.TAG_MODEL_URI] == f"models:/{config.MODEL_NAME}/2"
    assert run.data.tags[config.TAG_DATA_DIGEST] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert run.data.tags[TAG_OUTPUT_FILE] == str(output)
    assert run.data.metrics["rows"] == 2000
    expected = sklearn_metrics(frame.iloc[:, 14].to_numpy(), proba, 0.5)
    for name in config.METRIC_NAMES:
        assert run.data.metrics[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name
    assert list(tmp_path.glob("*.tmp")) == []


def test_a_relative_input_resolves_against_the_project_directory(tmp_path, tracking_uri) -> None:
    register_booster(fit_booster(), alias=config.ALIAS_CHAMPION)
    output = tmp_path / "shipped-scored.csv"
    result = mlflow_run(
        tmp_path,
        tracking_uri,
        *("-e", "score", "-P", f"input_file={config.DATA_FILE}", "-P", f"output_file={output}"),
        *("-P", "threshold=0.4"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shipped = PROJECT_ROOT / config.DATA_FILE
    assert len(pd.read_csv(output)) == len(pd.read_csv(shipped, header=None))
    (run,) = score_runs(MlflowClient(tracking_uri))
    assert run.data.tags[config.TAG_DATA_FILE] == str(shipped)
    assert run.data.params["threshold"] == "0.4"


@pytest.mark.parametrize(
    ("case", "problem"),
    [("missing_input", "no such file"), ("no_champion", "Registered model alias champion not found")],
)
def test_bad_input_exits_non_zero_with_one_line_no_file_and_no_running_run(
    case, problem, tmp_path, tracking_uri
) -> None:
    source = tmp_path / "input.csv"
    if case == "no_champion":
        register_booster(fit_booster())  # a version, but no @champion
        signal_frame(n_rows=100).to_csv(source, header=False, index=False)
    else:
        register_booster(fit_booster(), alias=config.ALIAS_CHAMPION)
    output = tmp_path / "scored.csv"

    result = mlflow_run(
        tmp_path, tracking_uri, "-e", "score", "-P", f"input_file={source}", "-P", f"output_file={output}"
    )

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if " ERROR pystock_training" in line]
    assert len(errors) == 1 and problem in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not output.exists()
    assert list(tmp_path.glob("*.tmp")) == []
    runs = score_runs(MlflowClient(tracking_uri))
    assert [run.info.status for run in runs] == ["FAILED"]
    assert problem in runs[0].data.tags[config.TAG_ERROR]


def test_cron_score_scores_with_the_champion_a_real_pipeline_promoted(tmp_path, tracking_uri) -> None:
    data_file = tmp_path / "train.csv"
    signal_frame(n_rows=400).to_csv(data_file, header=False, index=False)
    trained = mlflow_run(tmp_path, tracking_uri, "-P", f"data_file={data_file}", "-P", "num_boost_round=20")
    assert trained.returncode == 0, trained.stderr[-3000:]
    frame = signal_frame(n_rows=500, seed=8).iloc[:, :14]
    frame.to_csv(tmp_path / "today.csv", header=False, index=False)

    # Relative paths, as a crontab line in the data folder would give them.
    result = subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "cron_score.sh"), "today.csv", "today-scored.csv"],
        cwd=tmp_path,
        env=subprocess_env(tracking_uri)
        | {"PYSTOCK_PYTHON": sys.executable, "PYSTOCK_LOCK_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.splitlines()[-1].endswith(
        f"scored {tmp_path}/today.csv into {tmp_path}/today-scored.csv"
    )
    # The probabilities of the registered booster itself, loaded natively, not through pyfunc.
    booster = mlflow.xgboost.load_model(f"models:/{config.MODEL_NAME}/1")
    scored = pd.read_csv(tmp_path / "today-scored.csv")
    np.testing.assert_array_equal(scored["y_proba"].to_numpy(), expected_proba(booster, frame.to_numpy()))
    (run,) = score_runs(MlflowClient(tracking_uri))
    assert run.info.status == "FINISHED"
    assert run.data.tags[config.TAG_MODEL_VERSION] == "1"
