"""A step reads only from runs that ended FINISHED: tracking.finished_run on a real SQLite store."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from pystock_training import config
from pystock_training.errors import PystockError
from pystock_training.tracking import finished_run

pytestmark = pytest.mark.slow


def a_run(client: MlflowClient, status: str | None) -> str:
    """A run left RUNNING (``status`` None) or ended with ``status``."""
    run_id = client.create_run("0").info.run_id
    if status is not None:
        client.set_terminated(run_id, status)
    return run_id


def test_a_finished_run_is_returned(tracking_uri) -> None:
    client = MlflowClient()
    run_id = a_run(client, "FINISHED")
    client.set_tag(run_id, "marker", "this run")
    assert finished_run(run_id, "train_run_id", "to evaluate").data.tags["marker"] == "this run"


@pytest.mark.parametrize("status", ["RUNNING", "FAILED", "KILLED"])
def test_a_run_that_did_not_finish_is_one_line_naming_it(status, tracking_uri) -> None:
    run_id = a_run(MlflowClient(), None if status == "RUNNING" else status)
    expected = f"^train_run_id {run_id} is {status}, not FINISHED: nothing to evaluate$"
    with pytest.raises(PystockError, match=expected):
        finished_run(run_id, "train_run_id", "to evaluate")


def test_an_unknown_run_is_one_line(tracking_uri) -> None:
    with pytest.raises(PystockError, match=f"^evaluate_run_id 'f00': no such run in {tracking_uri}$"):
        finished_run("f00", "evaluate_run_id", "to register")


def test_the_steps_refuse_a_run_that_did_not_finish_and_register_nothing(tracking_uri, tmp_path) -> None:
    from pystock_training.steps.evaluate_model import evaluate_model
    from pystock_training.steps.register_model import register_model

    client = MlflowClient()
    failed = a_run(client, "FAILED")
    finished = a_run(client, "FINISHED")
    with pytest.raises(
        PystockError, match=f"^train_run_id {failed} is FAILED, not FINISHED: nothing to evaluate$"
    ):
        evaluate_model(predictions_file=tmp_path / "never-read.csv", train_run_id=failed)
    with pytest.raises(
        PystockError, match=f"^train_run_id {failed} is FAILED, not FINISHED: nothing to register$"
    ):
        register_model(train_run_id=failed, evaluate_run_id=finished)
    with pytest.raises(
        PystockError, match=f"^evaluate_run_id {failed} is FAILED, not FINISHED: nothing to register$"
    ):
        register_model(train_run_id=finished, evaluate_run_id=failed)
    assert client.search_registered_models() == []
    # Each step's own run ended FAILED with the reason.
    steps = client.search_runs(["0"], "tags.`mlflow.runName` != ''", max_results=100)
    errors = [
        run.data.tags.get(config.TAG_ERROR, "") for run in steps if run.info.run_id not in {failed, finished}
    ]
    assert len(errors) == 3 and all("not FINISHED" in error for error in errors)
