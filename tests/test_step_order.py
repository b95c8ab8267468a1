"""Each step starts early and waits for the run it reads from: tracking.wait_for_run, in-process."""

from __future__ import annotations

import logging
import threading

import pytest
from mlflow import MlflowClient

from pystock_training.errors import PystockError
from pystock_training.tracking import wait_for_run

# Every test creates a fresh SQLite tracking store (seconds) and some wait for a run to end.
pytestmark = pytest.mark.slow


def a_run(client: MlflowClient, status: str | None) -> str:
    """A run left RUNNING (``status`` None) or ended with ``status``."""
    run_id = client.create_run("0").info.run_id
    if status is not None:
        client.set_terminated(run_id, status)
    return run_id


def test_a_finished_run_is_returned_at_once(tracking_uri) -> None:
    client = MlflowClient()
    run_id = a_run(client, "FINISHED")
    client.set_tag(run_id, "marker", "this run")
    assert wait_for_run(run_id, "train_run_id", "to evaluate").data.tags["marker"] == "this run"


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_a_run_that_ended_badly_is_one_line_naming_it(status, tracking_uri) -> None:
    run_id = a_run(MlflowClient(), status)
    with pytest.raises(PystockError, match=f"^train_run_id {run_id} ended {status}: nothing to evaluate$"):
        wait_for_run(run_id, "train_run_id", "to evaluate")


def test_an_unknown_run_is_one_line(tracking_uri) -> None:
    with pytest.raises(PystockError, match=f"^evaluate_run_id 'f00': no such run in {tracking_uri}$"):
        wait_for_run("f00", "evaluate_run_id", "to register")


class _Seen(logging.Handler):
    """Sets an event when the waiter says it is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "waiting for run" in record.getMessage():
            self.waiting.set()


@pytest.mark.parametrize(("ends_as", "returns"), [("FINISHED", True), ("FAILED", False)])
def test_a_running_run_is_waited_for_until_it_ends(ends_as, returns, tracking_uri) -> None:
    client = MlflowClient()
    run_id = a_run(client, None)
    seen = _Seen()
    tracking_logger = logging.getLogger("pystock_training.tracking")
    tracking_logger.addHandler(seen)
    tracking_logger.setLevel(logging.INFO)
    outcome: dict[str, object] = {}

    def wait() -> None:
        try:
            outcome["run"] = wait_for_run(run_id, "train_run_id", "to evaluate")
        except PystockError as exc:
            outcome["error"] = str(exc)

    waiter = threading.Thread(target=wait)
    try:
        waiter.start()
        assert seen.waiting.wait(timeout=60), "the waiter never started waiting"
        # Still waiting: the run has not ended.
        assert waiter.is_alive()
        assert not outcome
        client.set_terminated(run_id, ends_as)
        waiter.join(timeout=60)
        assert not waiter.is_alive()
    finally:
        tracking_logger.removeHandler(seen)
    if returns:
        assert outcome["run"].info.run_id == run_id
        assert outcome["run"].info.status == "FINISHED"
    else:
        assert outcome["error"] == f"train_run_id {run_id} ended FAILED: nothing to evaluate"
