"""End to end: a real `mlflow run . --env-manager local` against a temp SQLite store."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from pystock_training import config
from tests.conftest import PROJECT_ROOT, signal_frame, subprocess_env

pytestmark = pytest.mark.slow

STEPS = ("train_model", "evaluate_model", "register_model")


def mlflow_run(
    cwd: Path, tracking_uri: str, *args: str, env_manager: str = "local"
) -> subprocess.CompletedProcess[str]:
    """`mlflow run PROJECT --env-manager local ARGS`, from a temp working directory."""
    return subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "--env-manager", env_manager, *args],
        cwd=cwd,
        env=subprocess_env(tracking_uri),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def all_runs(client: MlflowClient):
    return client.search_runs(["0"], max_results=1000)


def pipeline_tree(client: MlflowClient):
    runs = all_runs(client)
    parents = [run for run in runs if run.data.tags.get("mlflow.project.entryPoint") == "main"]
    assert len(parents) == 1
    parent = parents[0]
    children = {
        run.data.tags["mlflow.project.entryPoint"]: run
        for run in runs
        if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    return parent, children


def test_default_run_trains_evaluates_and_registers_a_loadable_model(tmp_path, tracking_uri) -> None:
    result = mlflow_run(tmp_path, tracking_uri)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri)

    parent, children = pipeline_tree(client)
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == config.PIPELINE_RUN_NAME
    assert set(children) == set(STEPS)
    assert all(run.info.status == "FINISHED" for run in children.values())
    # The steps ran under --env-manager local like the driver: MLflow tags every run it builds
    # an env for (conda, the default when mlflow.run is not told, would tag "conda").
    assert all("mlflow.project.env" not in run.data.tags for run in (parent, *children.values()))
    # Steps ran one after another, in order; evaluate_model was given the train run.
    train, evaluate, register = (children[step] for step in STEPS)
    assert train.info.end_time <= evaluate.info.start_time
    assert evaluate.info.end_time <= register.info.start_time
    assert evaluate.data.params["train_run_id"] == train.info.run_id
    assert evaluate.data.tags[config.TAG_MODEL_URI] == train.data.tags[config.TAG_MODEL_URI]

    # The train run logged the real dataset: its sha256, computed here independently.
    data_file = PROJECT_ROOT / config.DATA_FILE
    digest = hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert train.data.tags[config.TAG_DATA_DIGEST] == digest
    assert train.inputs.dataset_inputs[0].dataset.digest == digest[:16]

    # Evaluate's metrics are those of the predictions train logged, recomputed here.
    predictions = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=train.info.run_id, artifact_path="predictions/predictions.csv", tracking_uri=tracking_uri
        )
    )
    assert list(predictions.columns[:3]) == ["y_test", "y_pred", "y_proba"]
    n_rows = len(pd.read_csv(data_file, header=None))
    assert len(predictions) == int(np.ceil(config.TEST_SIZE * n_rows))
    assert evaluate.data.metrics["roc_auc"] == pytest.approx(
        roc_auc_score(predictions["y_test"], predictions["y_proba"])
    )
    assert evaluate.data.metrics["baseline_roc_auc"] == pytest.approx(0.5)
    for name in (
        "accuracy",
        "balanced_accuracy",
        "precision",
        "recall",
        "f1",
        "mcc",
        "average_precision",
        "log_loss",
    ):
        assert name in evaluate.data.metrics and f"baseline_{name}" in evaluate.data.metrics
        assert f"lift_{name}" in evaluate.data.metrics
    artifacts = {a.path for a in client.list_artifacts(evaluate.info.run_id)} | {
        a.path for a in client.list_artifacts(evaluate.info.run_id, "plots")
    }
    assert {
        "evaluation.json",
        "evaluation_report.md",
        "plots/roc_curve.png",
        "plots/calibration.png",
    } <= artifacts
    assert {"plots/confusion_matrix.png", "plots/precision_recall_curve.png"} <= artifacts

    # The registered version loads through pyfunc as downstream does and predicts probabilities.
    version = client.get_model_version(config.MODEL_NAME, "1")
    assert version.tags[config.TAG_DATA_DIGEST] == digest
    assert version.tags[config.TAG_CODE_VERSION]
    assert float(version.tags["pystock.metric.roc_auc"]) == pytest.approx(
        evaluate.data.metrics["roc_auc"], rel=1e-5
    )
    assert {"champion", "challenger"} <= set(version.aliases)
    model = mlflow.pyfunc.load_model(f"models:/{config.MODEL_NAME}@{config.ALIAS_CHAMPION}")
    # What the existing batch scorer does (int64 columns 0..13), the named float64 frame, numpy.
    rows = pd.read_csv(data_file, header=None).iloc[:50, :-1]
    named = rows.set_axis([f"f{i}" for i in range(rows.shape[1])], axis=1).astype("float64")
    expected = np.asarray(model.predict(named))
    assert expected.shape == (50,) and np.all((expected > 0) & (expected < 1))
    for frame in (rows, rows.to_numpy(), rows.to_numpy().tolist()):
        np.testing.assert_allclose(model.predict(frame), expected)

    # The pages people read: the registered model, the version, the logged model, the parent run.
    registered = client.get_registered_model(config.MODEL_NAME)
    assert "14 features `f0`..`f13`" in registered.description
    assert "`champion` is the version downstream deploys" in registered.description
    # The Versions table shows a description's first words: what differs, not the model's name.
    assert version.description == register.data.tags[config.TAG_SUMMARY].replace(
        f"promoted {config.MODEL_NAME} version 1 (", "promoted (", 1
    )
    assert len(version.tags) <= 10, sorted(version.tags)
    # The SQLite store leaves ModelVersion.model_id empty; the source names the logged model.
    model_id = version.model_id or version.source.removeprefix("models:/")
    logged = {metric.key: metric.value for metric in client.get_logged_model(model_id).metrics}
    assert logged["roc_auc"] == evaluate.data.metrics["roc_auc"]
    assert logged["baseline_roc_auc"] == evaluate.data.metrics["baseline_roc_auc"]
    note = parent.data.tags["mlflow.note.content"]
    # The run page folds the note to its first lines: the verdict and the links come first.
    first, _, summary = note.partition("\n\n")
    assert first.startswith("**Promoted** · ")
    assert f"[{config.MODEL_NAME} version 1](#/models/{config.MODEL_NAME}/versions/1)" in first
    assert f"runs/{parent.info.run_id}/artifacts/decision.json)" in first
    assert f"runs/{evaluate.info.run_id}/artifacts/evaluation_report.md)" in first
    assert summary.startswith(parent.data.tags[config.TAG_SUMMARY])
    assert f"- model: roc_auc {evaluate.data.metrics['roc_auc']:.4f}" in note
    low, high = (evaluate.data.metrics[f"lift_roc_auc_ci_{end}"] for end in ("low", "high"))
    assert f"95% CI [{low:+.4f}, {high:+.4f}]" in note

    assert parent.data.tags[config.TAG_DECISION] == "promoted"
    assert parent.data.tags[config.TAG_MODEL_VERSION] == "1"
    # The scratch predictions file is gone; the artifact stays.
    assert not Path(train.data.tags[config.TAG_PREDICTIONS_FILE]).exists()
    # The one-line summary is the last thing the driver logs.
    driver_lines = [line for line in result.stderr.splitlines() if "pystock_training" in line]
    assert driver_lines[-1].endswith(parent.data.tags["pystock.summary"])


def test_upstream_to_csv_format_with_random_split_and_custom_parameters(tmp_path, tracking_uri) -> None:
    data_file = tmp_path / "upstream.csv"
    signal_frame(n_rows=400).to_csv(data_file)  # the upstream job's default: index and header ,0,1,...
    result = mlflow_run(
        tmp_path,
        tracking_uri,
        *("-P", f"data_file={data_file}", "-P", "split=random", "-P", "max_depth=2"),
        *("-P", "model_name=upstream-model", "-P", "num_boost_round=40", "-P", "test_size=0.25"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    _, children = pipeline_tree(client)
    train = children["train_model"]
    # main passed every parameter on under the same name.
    for name, value in {
        "split": "random",
        "max_depth": "2",
        "num_boost_round": "40",
        "test_size": "0.25",
    }.items():
        assert train.data.params[name] == value
    assert train.data.params["data_file"] == str(data_file)
    assert train.data.metrics["test_rows"] == 100
    # A strong signal: the model clearly beats the baseline.
    assert children["evaluate_model"].data.metrics["roc_auc"] > 0.8
    assert client.get_model_version("upstream-model", "1").aliases


def write_bad(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A bad data file of one kind, and a fragment the error line must contain."""
    path = tmp_path / f"{kind}.csv"
    good = signal_frame(n_rows=60)
    if kind == "missing":
        return path, "no such file"
    if kind == "directory":
        # A folder is a table of parts; one without any is refused before a step starts.
        path.mkdir()
        (path / "notes.txt").write_text("not a part\n")
        return path, "no part files (.parquet, .pq, .csv) found"
    if kind == "bad_label":
        good.iloc[9, -1] = 2
        good.to_csv(path, header=False, index=False)
        return path, "label 2 at line 10"
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
        return path, "binary content"
    raise ValueError(kind)


@pytest.mark.parametrize(
    ("parameter", "problem"),
    [
        ("max_depth=2.5", "2.5 is not a whole number"),
        ("test_size=1.5", "test_size must be between 0 and 1, got 1.5"),
        ("split=foo", "split must be one of time, random, got 'foo'"),
        ("model_name=", "model_name must not be empty"),
    ],
)
def test_bad_parameters_fail_in_seconds_with_one_line(parameter, problem, tmp_path, tracking_uri) -> None:
    result = mlflow_run(tmp_path, tracking_uri, "-P", parameter)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if " ERROR pystock_training" in line]
    assert len(errors) == 1 and problem in errors[0], result.stderr[-2000:]
    assert "Usage:" not in result.stderr and "Traceback" not in result.stderr
    runs = all_runs(MlflowClient(tracking_uri))
    # Checked before any step started: only the parent exists, FAILED, with the reason.
    assert [run.info.status for run in runs] == ["FAILED"]
    assert problem in runs[0].data.tags[config.TAG_ERROR]


@pytest.mark.parametrize("kind", ["missing", "directory", "bad_label", "binary"])
def test_bad_input_fails_cleanly_and_leaves_nothing_behind(kind, tmp_path, tracking_uri) -> None:
    path, problem = write_bad(kind, tmp_path)
    result = mlflow_run(tmp_path, tracking_uri, "-P", f"data_file={path}")
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if " ERROR " in line and str(path) in line]
    assert error_lines, result.stderr[-3000:]
    assert problem in error_lines[-1]
    assert "Traceback" not in result.stderr

    client = MlflowClient(tracking_uri)
    assert client.search_registered_models() == []
    runs = all_runs(client)
    assert runs, "the failure left no run to inspect"
    assert {run.info.status for run in runs} == {"FAILED"}
    parent = next(run for run in runs if run.data.tags.get("mlflow.project.entryPoint") == "main")
    assert problem in parent.data.tags[config.TAG_ERROR]


def test_a_step_run_on_its_own_with_a_missing_file_ends_failed(tmp_path, tracking_uri) -> None:
    missing = tmp_path / "nope.csv"
    result = mlflow_run(tmp_path, tracking_uri, "-e", "train_model", "-P", f"data_file={missing}")
    assert result.returncode != 0
    assert f"{missing}: no such file" in result.stderr
    runs = all_runs(MlflowClient(tracking_uri))
    assert [run.info.status for run in runs] == ["FAILED"]


@pytest.mark.skipif(
    not os.environ.get("PYSTOCK_TEST_ENV_MANAGERS"),
    reason="builds a virtualenv from PyPI (network, about a minute); set PYSTOCK_TEST_ENV_MANAGERS=1",
)
def test_steps_run_under_the_env_manager_the_driver_runs_under(tmp_path, tracking_uri) -> None:
    # mlflow.run does not inherit --env-manager; without the driver passing it on, each step
    # would try conda. virtualenv builds its env from conda.yaml's pip: section (the lock), once
    # per machine (cached under ~/.mlflow/envs), and tags every run it activates it for.
    data_file = tmp_path / "small.csv"
    signal_frame(n_rows=200).to_csv(data_file, header=False, index=False)
    result = mlflow_run(
        tmp_path,
        tracking_uri,
        "-P",
        f"data_file={data_file}",
        "-P",
        "num_boost_round=10",
        env_manager="virtualenv",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = pipeline_tree(MlflowClient(tracking_uri))
    assert set(children) == set(STEPS)
    for run in (parent, *children.values()):
        assert run.data.tags.get("mlflow.project.env") == "virtualenv"
        assert run.info.status == "FINISHED"
