"""The step functions called directly against a real SQLite store: success and failure paths."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pystock_training import config
from pystock_training.errors import DataError, PystockError
from pystock_training.steps import evaluate_model, register_model, serving_check, train_model
from tests.conftest import signal_frame


def only_run(client: MlflowClient):
    runs = client.search_runs(["0"])
    assert len(runs) == 1
    return runs[0]


def test_parquet_trains_evaluates_and_registers(tmp_path, tracking_uri) -> None:
    data_file = tmp_path / "upstream.parquet"
    signal_frame(n_rows=500).rename(columns=str).to_parquet(data_file)
    predictions_file = tmp_path / "out" / "predictions.csv"

    trained = train_model(data_file=data_file, predictions_file=predictions_file, num_boost_round=50)
    frame = pd.read_csv(predictions_file)
    assert list(frame.columns) == ["y_test", "y_pred", "y_proba", "baseline_proba"]
    assert len(frame) == 165  # ceil(0.33 * 500), the last rows in file order
    labels = signal_frame(n_rows=500).iloc[-165:, -1].to_numpy()
    assert np.array_equal(frame["y_test"].to_numpy(), labels)

    metrics = evaluate_model(predictions_file=predictions_file)
    assert metrics["roc_auc"] > 0.8 > metrics["baseline_roc_auc"]

    evaluate_run = MlflowClient().search_runs(
        ["0"], filter_string="tags.`mlflow.runName` = 'evaluate_model'"
    )[0]
    version = register_model(train_run_id=trained.run_id, evaluate_run_id=evaluate_run.info.run_id)
    assert str(version.version) == "1"
    assert config.ALIAS_CHAMPION in version.aliases
    assert version.tags[config.TAG_DATA_DIGEST] == trained.data_digest
    statuses = {run.info.status for run in MlflowClient().search_runs(["0"])}
    assert statuses == {"FINISHED"}


def test_bad_parameters_fail_the_run_with_the_reason(tmp_path, tracking_uri, signal_csv) -> None:
    with pytest.raises(PystockError, match="learning_rate must be in"):
        train_model(data_file=signal_csv, predictions_file=tmp_path / "p.csv", learning_rate=0)
    run = only_run(MlflowClient())
    assert run.info.status == "FAILED"
    assert "learning_rate" in run.data.tags[config.TAG_ERROR]
    assert not (tmp_path / "p.csv").exists()


def test_missing_predictions_fail_evaluate(tmp_path, tracking_uri) -> None:
    missing = tmp_path / "none.csv"
    with pytest.raises(DataError, match="no such predictions file"):
        evaluate_model(predictions_file=missing)
    assert only_run(MlflowClient()).info.status == "FAILED"


def test_unknown_train_run_registers_nothing(tracking_uri) -> None:
    with pytest.raises(PystockError, match="no such run"):
        register_model(train_run_id="0123456789abcdef0123456789abcdef")
    assert MlflowClient().search_registered_models() == []
    assert only_run(MlflowClient()).info.status == "FAILED"


class NanModel(mlflow.pyfunc.PythonModel):
    """A model that loads fine but predicts garbage."""

    def predict(self, context, model_input, params=None):
        return np.full(len(model_input), np.nan)


def test_a_version_that_fails_the_serving_check_is_never_champion(tracking_uri) -> None:
    example = pd.DataFrame(np.zeros((3, 14), dtype=np.float32), columns=[f"f{i}" for i in range(14)])
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=NanModel(), input_example=example)
        mlflow.set_tag(config.TAG_MODEL_URI, info.model_uri)

    with pytest.raises(PystockError, match="serving check failed"):
        register_model(train_run_id=run.info.run_id, model_name="broken")
    client = MlflowClient()
    version = client.get_model_version("broken", "1")
    assert version.aliases == []
    assert version.tags["pystock.serving_check"] == "failed"
    register_run = client.search_runs(["0"], filter_string="tags.`mlflow.runName` = 'register_model'")[0]
    assert register_run.info.status == "FAILED"


def test_serving_check_accepts_a_real_model(tracking_uri, signal_csv, tmp_path) -> None:
    trained = train_model(data_file=signal_csv, predictions_file=tmp_path / "p.csv", num_boost_round=20)
    version = mlflow.register_model(trained.model_uri, "checked")
    proba = serving_check("checked", version.version)
    assert proba.shape == (config.EXAMPLE_ROWS,)
    assert np.all((proba > 0) & (proba < 1))
