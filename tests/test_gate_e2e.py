"""The promotion gate end to end: real `mlflow run` pipelines against one SQLite store."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from pystock_training import config
from tests.conftest import signal_frame
from tests.test_pipeline_e2e import mlflow_run, pytestmark  # noqa: F401 - marks these slow too

N_ROWS = 900


def parent_runs(client: MlflowClient):
    return client.search_runs(
        ["0"],
        filter_string="tags.`mlflow.project.entryPoint` = 'main'",
        order_by=["attributes.start_time ASC"],
    )


def aliases(client: MlflowClient) -> dict[str, str]:
    return {
        alias: str(client.get_model_version_by_alias(config.MODEL_NAME, alias).version)
        for alias in (config.ALIAS_CHAMPION, config.ALIAS_CHALLENGER)
    }


def test_a_strong_champion_survives_a_candidate_that_learned_nothing(tmp_path, tracking_uri) -> None:
    client = MlflowClient(tracking_uri)

    # 1. A strong first model: the label follows the last feature 90% of the time.
    strong = tmp_path / "strong.csv"
    signal_frame(N_ROWS, seed=0).to_csv(strong, header=False, index=False)
    result = mlflow_run(tmp_path, tracking_uri, "-P", f"data_file={strong}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert aliases(client) == {"champion": "1", "challenger": "1"}
    first = parent_runs(client)[-1]
    assert first.data.tags[config.TAG_DECISION] == "promoted"
    assert first.data.tags[config.TAG_MODEL_VERSION] == "1"

    # 2. The same file with days appended: first 2,000 where the rule is reversed, then 1,000
    #    where it holds again. With split=time and test_size=0.25 the candidate trains mostly on
    #    the reversed rule and is tested on the last 975 days, where the champion shines. Those
    #    days lie beyond the champion's file (a verified append), so it never trained on them.
    mixed = tmp_path / "mixed.csv"
    frame = pd.concat(
        [signal_frame(N_ROWS, seed=0), signal_frame(2000, seed=1, follow=0.1), signal_frame(1000, seed=3)]
    )
    frame.to_csv(mixed, header=False, index=False)
    n_test = int(np.ceil(0.25 * len(frame)))
    result = mlflow_run(
        tmp_path, tracking_uri, "-P", f"data_file={mixed}", "-P", "split=time", "-P", "test_size=0.25"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert aliases(client) == {"champion": "1", "challenger": "2"}
    second = parent_runs(client)[-1]
    assert second.info.status == "FINISHED"
    assert second.data.tags[config.TAG_DECISION] == "rejected"
    assert second.data.tags[config.TAG_MODEL_VERSION] == "2"

    decision = mlflow.artifacts.load_dict(f"runs:/{second.info.run_id}/{config.DECISION_ARTIFACT}")
    assert decision["verdict"] == "rejected"
    assert decision["champion_compared"] == "1" and decision["champion_now"] == "1"
    checks = {check["name"]: check for check in decision["checks"]}
    champion_check = checks["champion"]
    assert not champion_check["passed"]
    assert champion_check["values"]["ci_high"] < -decision["gate"]["max_regression"]
    assert champion_check["values"]["champion_value"] > 0.8
    assert decision["reasons"] and any(
        "significantly worse than champion version 1" in r for r in decision["reasons"]
    )
    # The champion's probabilities travelled in the predictions CSV, on the candidate's rows.
    train = client.search_runs(
        ["0"],
        filter_string=f"tags.`mlflow.parentRunId` = '{second.info.run_id}' "
        "and tags.`mlflow.project.entryPoint` = 'train_model'",
    )[0]
    predictions = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=train.info.run_id, artifact_path="predictions/predictions.csv", tracking_uri=tracking_uri
        )
    )
    assert {"champion_proba", "champion_pred"} <= set(predictions.columns)
    assert len(predictions) == n_test
    assert predictions["champion_proba"].notna().all()  # every test row is new to the champion
    assert checks["champion"]["values"]["rows_compared"] == n_test
    version = client.get_model_version(config.MODEL_NAME, "2")
    assert version.tags[config.TAG_DECISION] == "rejected"
    assert "significantly worse than champion version 1" in version.description
    # The one-line summary, last, says why.
    last = [line for line in result.stderr.splitlines() if "pystock_training" in line][-1]
    assert "rejected training-model-psystock version 2" in last and "champion stays version 1" in last
    assert "diff CI [" in last

    # 3. The same rejection with fail_on_reject=true exits non-zero, for CI gates.
    # force: retrain; without it the run key's recorded rejection is replayed, also non-zero.
    result = mlflow_run(
        tmp_path,
        tracking_uri,
        *("-P", f"data_file={mixed}", "-P", "test_size=0.25"),
        *("-P", "fail_on_reject=true", "-P", "force=true"),
    )
    assert result.returncode != 0
    assert aliases(client) == {"champion": "1", "challenger": "3"}
    third = parent_runs(client)[-1]
    assert third.data.tags[config.TAG_DECISION] == "rejected"
    # The driver ends the run FINISHED, but on any non-zero exit `mlflow run` marks it FAILED
    # (MLflow 3.17 compares a status string with ints in _maybe_set_run_terminated).
    assert third.info.status == "FAILED"
    assert config.TAG_ERROR not in third.data.tags  # a decision, not a crash
    assert "fail_on_reject" in result.stderr
    assert json.loads(json.dumps(decision))  # the record is plain JSON
