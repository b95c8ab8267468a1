"""Verdicts: a rejection on the model's merits is final; one the model did not cause is retried.

``pystock.verdict`` is ``final`` (promoted, or rejected on the model's merits) or ``retry`` (the
champion moved meanwhile, or the registry could not load the version). Only a final verdict
closes a run key; a skipped run answers with that verdict's exit code. The step-level cases call
the step functions directly; the ``slow`` ones run real `mlflow run` pipelines.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from pystock_training import config
from pystock_training.pipeline import EXIT_REJECTED, PipelineParams
from pystock_training.steps.evaluate_model import evaluate_model
from pystock_training.steps.register_model import register_model
from pystock_training.steps.train_model import train_model
from pystock_training.trigger import compute_run_key, previous_run
from tests.conftest import PROJECT_ROOT, signal_frame, subprocess_env
from tests.test_pipeline_e2e import mlflow_run
from tests.test_steps import NanModel, run_named

# Every test runs real pipeline steps against a tracking store: seconds each.
pytestmark = pytest.mark.slow

NUM_BOOST_ROUND = 20


def train_and_evaluate(data_file: Path, predictions: Path, random_state: int = 42) -> tuple[str, str]:
    trained = train_model(
        data_file=data_file,
        predictions_file=predictions,
        num_boost_round=NUM_BOOST_ROUND,
        random_state=random_state,
    )
    evaluate_model(predictions_file=predictions)
    return trained.run_id, run_named("evaluate_model")


def register_record(client: MlflowClient) -> tuple[Run, dict]:
    run = client.get_run(run_named("register_model"))
    return run, mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{config.DECISION_ARTIFACT}")


def aliases(client: MlflowClient) -> dict[str, str]:
    return {
        alias: str(version)
        for alias, version in client.get_registered_model(config.MODEL_NAME).aliases.items()
    }


# --- The champion moved while the candidate was evaluated -------------------------------------


@pytest.mark.parametrize(
    ("min_score", "verdict", "failed"),
    [
        # Nothing against the model itself: compared with version 1, which is no longer champion.
        (0.5, "retry", {"compare_and_set"}),
        # Below the floor whatever the champion: that is a verdict on the model.
        (0.99, "final", {"min_score", "compare_and_set"}),
    ],
)
def test_a_rejection_because_the_champion_moved_is_retried_unless_the_model_failed_on_its_merits(
    min_score, verdict, failed, tmp_path, tracking_uri, signal_csv
) -> None:
    client = MlflowClient()
    predictions = tmp_path / "p.csv"
    train_id, evaluate_id = train_and_evaluate(signal_csv, predictions)
    assert register_model(train_run_id=train_id, evaluate_run_id=evaluate_id).promoted
    # Candidate A is trained and evaluated against champion version 1 ...
    train_id, evaluate_id = train_and_evaluate(signal_csv, predictions, random_state=1)
    assert client.get_run(train_id).data.tags[config.TAG_CHAMPION_VERSION] == "1"
    # ... while another pipeline registers version 2 and makes it champion.
    other = mlflow.register_model(client.get_run(train_id).data.tags[config.TAG_MODEL_URI], config.MODEL_NAME)
    client.set_registered_model_alias(config.MODEL_NAME, config.ALIAS_CHAMPION, str(other.version))

    result = register_model(train_run_id=train_id, evaluate_run_id=evaluate_id, min_score=min_score)

    assert not result.promoted
    assert result.decision.is_final is (verdict == "final")
    assert {check.name for check in result.decision.checks if not check.passed} == failed
    assert str(result.version.version) == "3"
    assert aliases(client) == {config.ALIAS_CHAMPION: "2", config.ALIAS_CHALLENGER: "3"}
    tags = result.version.tags
    assert (tags[config.TAG_DECISION], tags[config.TAG_VERDICT]) == ("rejected", verdict)
    assert "champion moved from version 1 to 2" in result.version.description
    assert config.TAG_REPLACED_VERSION not in tags
    run, record = register_record(client)
    assert (run.data.tags[config.TAG_DECISION], run.data.tags[config.TAG_VERDICT]) == ("rejected", verdict)
    assert record["final"] is (verdict == "final")
    assert (record["champion_compared"], record["champion_now"]) == ("1", "2")
    moved = next(check for check in record["checks"] if check["name"] == "compare_and_set")
    assert moved["final"] is False
    assert moved["values"] == {"compared": "1", "now": "2"}
    # The summary tells the reader where the champion is now, not that version 1 stayed.
    summary = run.data.tags[config.TAG_SUMMARY]
    assert summary == result.summary == record["summary"]
    assert summary.startswith(f"rejected {config.MODEL_NAME} version 3 (")
    assert summary.endswith("champion is now version 2")
    assert "champion moved from version 1 to 2" in summary
    assert "stays" not in summary


# --- The serving check ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        OSError("Connection reset by peer"),
        MlflowException("artifact store unavailable", error_code=TEMPORARILY_UNAVAILABLE),
    ],
    ids=["oserror", "mlflow-exception"],
)
def test_a_version_the_registry_cannot_load_is_rejected_for_now_and_retried(
    error, monkeypatch, tmp_path, tracking_uri, signal_csv
) -> None:
    client = MlflowClient()
    train_id, evaluate_id = train_and_evaluate(signal_csv, tmp_path / "p.csv")

    def unavailable(model_uri: str, *args: object, **kwargs: object) -> None:
        raise error

    # The registry or artifact store not answering, as the serving check sees it.
    monkeypatch.setattr(mlflow.pyfunc, "load_model", unavailable)
    result = register_model(train_run_id=train_id, evaluate_run_id=evaluate_id)

    assert not result.promoted
    assert not result.decision.is_final
    assert [check.name for check in result.decision.checks if not check.passed] == ["serving"]
    assert aliases(client) == {config.ALIAS_CHALLENGER: "1"}
    tags = result.version.tags
    assert (tags[config.TAG_DECISION], tags[config.TAG_VERDICT]) == ("rejected", "retry")
    assert "did not load" in result.version.description
    run, record = register_record(client)
    assert run.info.status == "FINISHED"
    assert (run.data.tags[config.TAG_DECISION], run.data.tags[config.TAG_VERDICT]) == ("rejected", "retry")
    assert record["final"] is False
    assert f"models:/{config.MODEL_NAME}/1 did not load ({error})" in record["summary"]
    assert "no champion" in record["summary"]


def test_a_version_that_loads_but_predicts_nonsense_is_rejected_for_good(
    tmp_path, tracking_uri, signal_csv
) -> None:
    client = MlflowClient()
    _, evaluate_id = train_and_evaluate(signal_csv, tmp_path / "p.csv")
    # In place of the trained booster, a model that loads fine and predicts NaN.
    example = pd.DataFrame(np.zeros((3, 14)), columns=[f"f{i}" for i in range(14)])
    with mlflow.start_run(run_name="nan-model") as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=NanModel(), input_example=example)
        mlflow.set_tag(config.TAG_MODEL_URI, info.model_uri)

    result = register_model(train_run_id=run.info.run_id, evaluate_run_id=evaluate_id)

    assert not result.promoted
    assert result.decision.is_final
    assert result.version.tags[config.TAG_VERDICT] == "final"
    assert (
        result.version.description.startswith("rejected")
        and "serving check failed" in result.version.description
    )
    assert client.get_run(run_named("register_model")).data.tags[config.TAG_VERDICT] == "final"


# --- Which earlier runs close a run key -------------------------------------------------------


def parent_run(client: MlflowClient, key: str, start: int, status: str, **tags: str) -> str:
    """A pipeline parent run as the driver leaves it: its run key, decision and verdict tags."""
    names = {"decision": config.TAG_DECISION, "verdict": config.TAG_VERDICT}
    run = client.create_run(
        "0",
        start_time=start,
        tags={config.TAG_RUN_KEY: key, "mlflow.project.entryPoint": "main"}
        | {names[name]: value for name, value in tags.items()},
    )
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status, end_time=start + 1)
    return run.info.run_id


def test_only_a_final_verdict_closes_a_run_key_whatever_the_run_status(tracking_uri) -> None:
    client = MlflowClient()
    key, other_key = "a" * 64, "b" * 64
    # Rejected on its merits under fail_on_reject: `mlflow run` marked the parent FAILED.
    rejected = parent_run(client, key, 1000, "FAILED", decision="rejected", verdict="final")
    # Lost the race with another pipeline, or the registry did not answer: retried.
    parent_run(client, key, 2000, "FINISHED", decision="rejected", verdict="retry")
    # A skipped run points at a verdict; it is not one, even if it carried the tag.
    parent_run(client, key, 3000, "FINISHED", decision="skipped", verdict="final")
    parent_run(client, key, 4000, "FAILED")  # an error before any decision
    parent_run(client, key, 5000, "RUNNING")  # kill -9
    parent_run(client, key, 6000, "KILLED")  # SIGTERM
    parent_run(client, other_key, 7000, "FINISHED", decision="promoted", verdict="final")

    assert previous_run("0", key).info.run_id == rejected

    promoted = parent_run(client, key, 8000, "FINISHED", decision="promoted", verdict="final")
    assert previous_run("0", key).info.run_id == promoted
    assert previous_run("0", key, exclude_run_id=promoted).info.run_id == rejected
    assert previous_run("0", "c" * 64) is None


# --- End to end: `mlflow run` -----------------------------------------------------------------


def pipeline_parents(client: MlflowClient) -> list[Run]:
    return client.search_runs(
        ["0"],
        filter_string="tags.`mlflow.project.entryPoint` = 'main'",
        order_by=["attributes.start_time ASC"],
    )


def versions(client: MlflowClient) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{config.MODEL_NAME}'"))


def children(client: MlflowClient, parent: Run) -> list[Run]:
    return client.search_runs(["0"], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")


def test_a_key_rejected_under_fail_on_reject_is_not_retrained_and_fails_again(tmp_path, tracking_uri) -> None:
    client = MlflowClient(tracking_uri)
    data = tmp_path / "data.csv"
    signal_frame(300).to_csv(data, header=False, index=False)
    # roc_auc is about 0.9 here: below this floor, a rejection on the model's merits.
    args = ("-P", f"data_file={data}", "-P", f"num_boost_round={NUM_BOOST_ROUND}", "-P", "min_score=0.99")

    first = mlflow_run(tmp_path, tracking_uri, *args, "-P", "fail_on_reject=true")
    assert first.returncode != 0, first.stderr[-3000:]
    assert versions(client) == ["1"]
    [rejected] = pipeline_parents(client)
    assert rejected.data.tags[config.TAG_DECISION] == "rejected"
    assert rejected.data.tags[config.TAG_VERDICT] == "final"
    assert rejected.info.status == "FAILED"  # `mlflow run` marks it so on the non-zero exit
    assert config.TAG_ERROR not in rejected.data.tags
    assert config.ALIAS_CHAMPION not in aliases(client)

    # The identical command: the verdict is on record, so nothing trains, and it fails again.
    second = mlflow_run(tmp_path, tracking_uri, *args, "-P", "fail_on_reject=true")
    skipped = pipeline_parents(client)[-1]
    # A different key means the code changed between the runs (someone editing the tree).
    assert skipped.data.tags[config.TAG_RUN_KEY] == rejected.data.tags[config.TAG_RUN_KEY]
    assert second.returncode != 0, second.stderr[-3000:]
    assert versions(client) == ["1"]
    assert skipped.data.tags[config.TAG_DECISION] == "skipped"
    assert skipped.data.tags[config.TAG_SKIPPED_FOR] == rejected.info.run_id
    assert children(client, skipped) == []
    assert "the recorded verdict" in second.stderr

    # main.py run directly says which non-zero: the rejection's own code, not an error's.
    direct = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "main.py"),
            f"--data-file={data}",
            f"--num-boost-round={NUM_BOOST_ROUND}",
            "--min-score=0.99",
            "--fail-on-reject=true",
        ],
        cwd=tmp_path,
        env=subprocess_env(tracking_uri),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert direct.returncode == EXIT_REJECTED, direct.stderr[-3000:]
    assert versions(client) == ["1"]

    # Without fail_on_reject the same key is skipped and exits 0.
    third = mlflow_run(tmp_path, tracking_uri, *args)
    assert third.returncode == 0, third.stderr[-3000:]
    assert versions(client) == ["1"]
    last = pipeline_parents(client)[-1]
    assert last.data.tags[config.TAG_DECISION] == "skipped"
    assert last.data.tags[config.TAG_SKIPPED_FOR] == rejected.info.run_id


def test_a_key_whose_last_verdict_was_retry_trains_on_the_next_tick(tmp_path, tracking_uri) -> None:
    client = MlflowClient(tracking_uri)
    data = tmp_path / "data.csv"
    signal_frame(300).to_csv(data, header=False, index=False)
    key = compute_run_key(
        data, PipelineParams(data_file=str(data), num_boost_round=NUM_BOOST_ROUND).run_key_params()
    )
    # An earlier pipeline on this key lost the race for the champion (see the step-level test).
    lost = parent_run(
        client, key, int(time.time() * 1000) - 60_000, "FINISHED", decision="rejected", verdict="retry"
    )

    result = mlflow_run(
        tmp_path, tracking_uri, "-P", f"data_file={data}", "-P", f"num_boost_round={NUM_BOOST_ROUND}"
    )

    assert result.returncode == 0, result.stderr[-3000:]
    retried = pipeline_parents(client)[-1]
    assert retried.info.run_id != lost
    # A different key means the code changed between the runs (someone editing the tree).
    assert retried.data.tags[config.TAG_RUN_KEY] == key
    assert retried.data.tags[config.TAG_DECISION] == "promoted"
    assert retried.data.tags[config.TAG_VERDICT] == "final"
    assert versions(client) == ["1"]
    assert aliases(client) == {config.ALIAS_CHAMPION: "1", config.ALIAS_CHALLENGER: "1"}
