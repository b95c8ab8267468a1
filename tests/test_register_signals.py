"""A SIGTERM or Ctrl-C during register_model never leaves a promotion half-recorded.

The decision, the alias moves and the records that describe them form one critical section
(``registry_lock`` + ``signals_held`` around ``_decide_and_record``). A signal before it leaves
the champion untouched; a signal inside it is held, and delivered right after, with the records
complete. Each case runs register_model in a child process whose profile hook sends the signal
at the moment a chosen function is entered, so it lands in the same place every time.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from pystock_training import config
from pystock_training.lock import TAG_HOLDER, TAG_TOKEN, lock_name
from pystock_training.steps.evaluate_model import evaluate_model
from pystock_training.steps.register_model import register_model
from pystock_training.steps.train_model import train_model
from tests.conftest import PROJECT_ROOT, signal_frame, subprocess_env
from tests.test_steps import run_named

# Every test starts a register_model process and signals it: seconds each.
pytestmark = pytest.mark.slow

EXIT_INTERRUPTED = 3

# argv: train run, evaluate run, the function whose entry sends the signal, the function it must
# be called from (or ""), the signal. Prints what was raised and where the signal was sent.
REGISTER_WITH_SIGNAL = """
import json, signal, sys
from pystock_training.steps.register_model import register_model
from pystock_training.tracking import raise_on_sigterm

train_run_id, evaluate_run_id, target, within, signal_name = sys.argv[1:]
raise_on_sigterm()
signum = signal.Signals[signal_name]
inside = not within
sent = []

def send_signal_on_entry(frame, event, _arg):
    global inside
    if event != "call" or sent:
        return
    name = frame.f_code.co_qualname
    inside = inside or name == within
    if inside and name == target:
        handler = signal.getsignal(signum)
        sent.append({"at": name, "handler": getattr(handler, "__qualname__", str(handler))})
        signal.raise_signal(signum)

sys.setprofile(send_signal_on_entry)
try:
    register_model(train_run_id=train_run_id, evaluate_run_id=evaluate_run_id)
except KeyboardInterrupt as exc:
    sys.setprofile(None)
    print(json.dumps({"raised": type(exc).__name__, "message": str(exc), "sent": sent}))
    sys.exit(3)
sys.setprofile(None)
print(json.dumps({"raised": None, "sent": sent}))
"""

# What each signal becomes under the scripts' handlers (tracking.raise_on_sigterm), as
# register_model's caller sees it and the run's error tag says.
RAISED = {
    "SIGTERM": ("Terminated", "terminated by SIGTERM"),
    "SIGINT": ("KeyboardInterrupt", "interrupted by SIGINT (Ctrl-C)"),
}
GATE_CHECKS = ("min_score", "baseline", "input_contract", "champion", "serving")


def champion_and_candidate(data_file: Path, predictions: Path) -> tuple[str, str]:
    """Version 1 promoted; a second model on the same rows trained and evaluated against it.

    The same data and split give the same model, so the candidate passes the gate (difference 0).
    Returns the candidate's train and evaluate run ids.
    """
    first = train_model(data_file=data_file, predictions_file=predictions, num_boost_round=20)
    evaluate_model(predictions_file=predictions)
    assert register_model(train_run_id=first.run_id, evaluate_run_id=run_named("evaluate_model")).promoted
    second = train_model(
        data_file=data_file, predictions_file=predictions, num_boost_round=20, random_state=1
    )
    assert MlflowClient().get_run(second.run_id).data.tags[config.TAG_CHAMPION_STATUS] == "scored"
    evaluate_model(predictions_file=predictions)
    return second.run_id, run_named("evaluate_model")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One store with champion version 1 and an evaluated candidate; each test gets a copy.

    Building it is most of a test's time. Its artifacts stay where they are: the copies point at
    them by absolute path, and each test's new runs write under their own run ids.
    """
    directory = tmp_path_factory.mktemp("template")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    data_file = directory / "signal.csv"
    signal_frame().to_csv(data_file, header=False, index=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        patch.chdir(directory)  # the store's artifact root is ./mlruns of its creator
        mlflow.set_tracking_uri(uri)
        try:
            train_run_id, evaluate_run_id = champion_and_candidate(data_file, directory / "p.csv")
        finally:
            mlflow.set_tracking_uri(None)
    return directory / "mlflow.db", train_run_id, evaluate_run_id


@pytest.fixture
def candidate(template: tuple[Path, str, str], tracking_uri: str) -> tuple[str, str]:
    """The template store copied into this test's store: the candidate's train and evaluate runs."""
    database, train_run_id, evaluate_run_id = template
    # The backup API copies a consistent snapshot, whatever connections the template has open.
    with (
        closing(sqlite3.connect(database)) as source,
        closing(sqlite3.connect(tracking_uri.removeprefix("sqlite:///"))) as target,
    ):
        source.backup(target)
    return train_run_id, evaluate_run_id


def register_in_child(
    tmp_path: Path,
    tracking_uri: str,
    train_run_id: str,
    evaluate_run_id: str,
    target: str,
    within: str,
    sig: str,
) -> dict:
    env = subprocess_env(tracking_uri) | {"PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", REGISTER_WITH_SIGNAL, train_run_id, evaluate_run_id, target, within, sig],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Interrupted, and said so: not finished (a lost signal), not a crash (killed by a signal).
    assert result.returncode == EXIT_INTERRUPTED, (result.returncode, result.stdout, result.stderr[-3000:])
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert [sent["at"] for sent in outcome["sent"]] == [target], outcome
    assert (outcome["raised"], outcome["message"] or outcome["raised"]) == RAISED[sig], outcome
    return outcome


def register_run():
    runs = MlflowClient().search_runs(
        ["0"],
        filter_string="tags.`mlflow.runName` = 'register_model'",
        order_by=["attributes.start_time DESC"],
    )
    return runs[0]


def alias_version(client: MlflowClient, alias: str) -> str:
    return str(client.get_model_version_by_alias(config.MODEL_NAME, alias).version)


def assert_ended_killed(sig: str) -> None:
    run = register_run()
    assert run.info.status == "KILLED"
    assert run.data.tags[config.TAG_ERROR] == RAISED[sig][1]
    assert run.data.tags[config.TAG_MODEL_VERSION] == "2"


def assert_ended_killed_without_lock(client: MlflowClient, sig: str) -> None:
    assert_ended_killed(sig)
    names = [model.name for model in client.search_registered_models()]
    # Released on the way out: no lock (nor a breaker's tombstone) waits out its lease.
    assert lock_name(config.MODEL_NAME) not in names
    assert names == [config.MODEL_NAME]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize(
    ("target", "within"),
    [
        # The first record written: nothing of the decision is on the registry yet.
        ("MlflowClient.set_model_version_tag", "_decide_and_record"),
        # The first alias move (challenger), after the records and before champion moves.
        ("MlflowClient.set_registered_model_alias", "_decide_and_record"),
    ],
    ids=["first-record", "first-alias"],
)
def test_a_signal_inside_the_section_is_delivered_after_it_with_the_promotion_complete(
    target, within, sig, tmp_path, tracking_uri, candidate
) -> None:
    client = MlflowClient()
    train_run_id, evaluate_run_id = candidate

    outcome = register_in_child(tmp_path, tracking_uri, train_run_id, evaluate_run_id, target, within, sig)

    # The signal found the section's holding handler, not the one that raises.
    assert outcome["sent"][0]["handler"].startswith("signals_held."), outcome
    assert alias_version(client, config.ALIAS_CHAMPION) == "2"
    assert alias_version(client, config.ALIAS_CHALLENGER) == "2"
    tags = client.get_model_version(config.MODEL_NAME, "2").tags
    assert tags[config.TAG_DECISION] == "promoted"
    assert tags[config.TAG_VERDICT] == "final"
    assert tags[config.TAG_REPLACED_VERSION] == "1"
    version = client.get_model_version(config.MODEL_NAME, "2")
    assert version.description.startswith("promoted (roc_auc ")
    assert client.get_model_version(config.MODEL_NAME, "1").aliases == []

    run = register_run()
    assert run.data.tags[config.TAG_DECISION] == "promoted"
    assert run.data.tags[config.TAG_VERDICT] == "final"
    assert run.data.tags[config.TAG_SUMMARY].startswith(f"promoted {config.MODEL_NAME} version 2 (")
    record = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{config.DECISION_ARTIFACT}")
    assert (record["verdict"], record["final"], record["version"]) == ("promoted", True, "2")
    assert (record["champion_compared"], record["champion_now"], record["replaced_version"]) == (
        "1",
        "2",
        "1",
    )
    assert {check["name"]: check["passed"] for check in record["checks"]} == dict.fromkeys(GATE_CHECKS, True)
    assert_ended_killed_without_lock(client, sig)


@pytest.mark.parametrize(
    ("target", "sig"),
    [
        ("_serving_check", "SIGTERM"),
        ("_serving_check", "SIGINT"),
        # Before the lock is taken, and with it taken but before the signals are held.
        ("registry_lock", "SIGTERM"),
        ("signals_held", "SIGINT"),
    ],
)
def test_a_signal_before_the_section_leaves_the_champion_untouched(
    target, sig, tmp_path, tracking_uri, candidate
) -> None:
    client = MlflowClient()
    train_run_id, evaluate_run_id = candidate

    outcome = register_in_child(tmp_path, tracking_uri, train_run_id, evaluate_run_id, target, "", sig)

    assert not outcome["sent"][0]["handler"].startswith("signals_held."), outcome
    assert alias_version(client, config.ALIAS_CHAMPION) == "1"
    assert alias_version(client, config.ALIAS_CHALLENGER) == "1"
    version = client.get_model_version(config.MODEL_NAME, "2")
    assert version.aliases == []
    assert not {config.TAG_DECISION, config.TAG_VERDICT, config.TAG_REPLACED_VERSION} & set(version.tags)
    assert not version.description
    run = register_run()
    assert config.TAG_DECISION not in run.data.tags
    assert config.DECISION_ARTIFACT not in {
        artifact.path for artifact in client.list_artifacts(run.info.run_id)
    }
    assert_ended_killed_without_lock(client, sig)
    assert client.get_model_version(config.MODEL_NAME, "1").tags[config.TAG_DECISION] == "promoted"


def test_a_signal_while_waiting_for_another_runs_lock_leaves_it_and_the_champion_alone(
    tmp_path, tracking_uri, candidate
) -> None:
    client = MlflowClient()
    train_run_id, evaluate_run_id = candidate
    # Another pipeline is inside its section: the lock exists with its token.
    client.create_registered_model(
        lock_name(config.MODEL_NAME), tags={TAG_TOKEN: "other", TAG_HOLDER: "other"}
    )

    # _read runs only when the lock is taken: the child is waiting for it.
    register_in_child(
        tmp_path, tracking_uri, train_run_id, evaluate_run_id, "_read", "registry_lock", "SIGTERM"
    )

    assert alias_version(client, config.ALIAS_CHAMPION) == "1"
    assert config.TAG_DECISION not in client.get_model_version(config.MODEL_NAME, "2").tags
    assert_ended_killed("SIGTERM")
    # The waiter never held it, so it did not release it: the holder's lock is intact.
    assert client.get_registered_model(lock_name(config.MODEL_NAME)).tags[TAG_TOKEN] == "other"
