"""A step reads only from runs that ended FINISHED: tracking.finished_run on a real SQLite store."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

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
