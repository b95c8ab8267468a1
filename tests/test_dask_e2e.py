"""End to end on the dask engine: `mlflow run .` on Parquet parts, on an embedded cluster and on a
real `dask scheduler` with two `dask worker` processes, and the faults: a worker killed during
training, a scheduler that does not answer.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from pystock_training import config
from pystock_training.sources import source_digest
from tests.conftest import PROJECT_ROOT, poll_until, process_group, subprocess_env
from tests.dask_cluster import DaskCluster, dask_cluster, float_frame, walk_frame, write_parts
from tests.servers import free_port

pytestmark = pytest.mark.slow

STEPS = ("train_model", "evaluate_model", "register_model")


def pipeline_env(tracking_uri: str) -> dict[str, str]:
    # A DASK_SCHEDULER_ADDRESS from the machine would send the "nothing started" run elsewhere.
    return {key: value for key, value in subprocess_env(tracking_uri).items() if not key.startswith("DASK_")}


def pipeline_command(*parameters: str) -> list[str]:
    command = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local"]
    for parameter in parameters:
        command += ["-P", parameter]
    return command


def run_pipeline(
    cwd: Path, tracking_uri: str, *parameters: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        pipeline_command(*parameters),
        cwd=cwd,
        env=pipeline_env(tracking_uri) | (env or {}),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def pystock_errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR pystock_training" in line]


def runs_of(client: MlflowClient):
    return client.search_runs(["0"], max_results=1000)


def pipeline_tree(client: MlflowClient, parent_id: str | None = None):
    """The newest (or the given) pipeline run and its steps by entry point."""
    runs = runs_of(client)
    parents = [run for run in runs if run.data.tags.get("mlflow.project.entryPoint") == "main"]
    parent = next(run for run in parents if parent_id in (None, run.info.run_id))
    children = {
        run.data.tags["mlflow.project.entryPoint"]: run
        for run in runs
        if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    return parent, children


def assert_nothing_running(client: MlflowClient) -> None:
    assert [run.info.run_name for run in runs_of(client) if run.info.status == "RUNNING"] == []


def assert_promoted_on_dask(client: MlflowClient, workers: int, scheduler: str | None = None):
    """The pipeline promoted a model trained by ``workers`` Dask workers; its train run."""
    parent, children = pipeline_tree(client)
    assert parent.data.tags[config.TAG_DECISION] == "promoted"
    assert set(children) == set(STEPS)
    assert {run.info.status for run in (parent, *children.values())} == {"FINISHED"}
    train = children["train_model"]
    assert train.data.params["engine"] == parent.data.params["engine"] == "dask"
    assert train.data.tags[config.TAG_ENGINE] == "dask"
    assert train.data.tags[config.TAG_DASK_WORKERS] == str(workers)
    if scheduler is not None:
        assert train.data.tags[config.TAG_DASK_SCHEDULER] == scheduler
    version = client.get_model_version(config.MODEL_NAME, parent.data.tags[config.TAG_MODEL_VERSION])
    assert config.ALIAS_CHAMPION in version.aliases
    assert_nothing_running(client)
    return parent, children


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    """`dask scheduler` and two single-threaded `dask worker` processes on loopback ports."""
    with dask_cluster(tmp_path / "dask", n_workers=2) as started:
        yield started


def test_the_embedded_cluster_runs_the_pipeline_on_parquet_parts(tmp_path: Path, tracking_uri: str) -> None:
    frame = walk_frame(40_000, seed=11)
    parts = tmp_path / "parts"
    write_parts(frame, parts, 4)
    (parts / "_SUCCESS").touch()  # what the upstream writer leaves: not a part

    result = run_pipeline(tmp_path, tracking_uri, "engine=dask", f"data_file={parts}")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    # Nothing was started beforehand: the train step started a LocalCluster of one worker a core.
    _, children = assert_promoted_on_dask(client, workers=len(os.sched_getaffinity(0)))
    train, evaluate = children["train_model"], children["evaluate_model"]
    assert train.data.tags[config.TAG_DASK_SCHEDULER].startswith("tcp://127.0.0.1:")
    assert "starting an embedded Dask LocalCluster" in result.stderr
    assert "Traceback" not in result.stderr
    # The run key, the digest and the model describe the parts' manifest.
    digest = source_digest(parts)
    assert train.data.tags[config.TAG_DATA_DIGEST] == digest.sha256
    assert train.data.tags[config.TAG_DATA_SIZE] == str(digest.size)
    assert train.data.tags[config.TAG_DATA_ROWS] == "40000"
    assert train.inputs.dataset_inputs[0].dataset.digest == digest.sha256[:16]

    # The predictions went as CSV parts, and evaluate scored exactly those rows.
    names = sorted(artifact.path for artifact in client.list_artifacts(train.info.run_id, "predictions"))
    assert names == ["predictions/part-00000.csv", "predictions/part-00001.csv"]
    folder = Path(
        mlflow.artifacts.download_artifacts(
            run_id=train.info.run_id, artifact_path="predictions", dst_path=str(tmp_path / "artifact")
        )
    )
    predictions = pd.concat([pd.read_csv(folder / name.split("/")[1]) for name in names], ignore_index=True)
    n_test = int(np.ceil(config.TEST_SIZE * len(frame)))
    assert len(predictions) == n_test == train.data.metrics["test_rows"]
    np.testing.assert_array_equal(predictions["y_test"], frame["14"].iloc[-n_test:])
    assert evaluate.data.params["train_run_id"] == train.info.run_id
    assert evaluate.data.tags[config.TAG_PREDICTIONS_SHA256] == train.data.tags[config.TAG_PREDICTIONS_SHA256]
    assert evaluate.data.metrics["roc_auc"] == pytest.approx(
        roc_auc_score(predictions["y_test"], predictions["y_proba"])
    )
    # The scratch folder of parts is gone; the artifact stays.
    assert not Path(train.data.tags[config.TAG_PREDICTIONS_FILE]).exists()


def test_a_real_cluster_runs_the_pipeline(cluster: DaskCluster, tmp_path: Path, tracking_uri: str) -> None:
    parts = tmp_path / "parts"
    write_parts(walk_frame(20_000, seed=12), parts, 4)

    result = run_pipeline(
        tmp_path, tracking_uri, "engine=dask", f"dask_scheduler={cluster.address}", f"data_file={parts}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, children = assert_promoted_on_dask(MlflowClient(tracking_uri), workers=2, scheduler=cluster.address)
    assert f"connected to the Dask scheduler {cluster.address}: 2 workers" in result.stderr
    assert "starting an embedded Dask LocalCluster" not in result.stderr
    assert children["train_model"].data.params["dask_scheduler"] == cluster.address
    # The cluster the test started is the one that worked, and it is still whole.
    assert cluster.worker_names() == {"w1", "w2"}


def rank_seen(cluster: DaskCluster, name: str) -> bool | None:
    """Whether XGBoost's collective gave the worker its rank: xgboost.dask.train is under way."""
    return True if "got rank" in cluster.log(name).read_text(errors="replace") else None


def test_a_worker_killed_during_training_fails_the_step_in_one_line_and_the_next_run_succeeds(
    cluster: DaskCluster, tmp_path: Path, tracking_uri: str
) -> None:
    # Float features: trained with xgboost.dask.train, whose collective cannot lose a member.
    # Rounds enough that training is still going when the kill comes.
    parts = tmp_path / "floats"
    write_parts(float_frame(200_000, seed=13), parts, 4)
    command = pipeline_command(
        "engine=dask",
        f"dask_scheduler={cluster.address}",
        f"data_file={parts}",
        "num_boost_round=3000",
        "early_stopping_rounds=0",
        "max_depth=8",
    )
    with process_group(command, tmp_path, pipeline_env(tracking_uri)) as pipeline:
        poll_until(
            lambda: pipeline.poll() is None and rank_seen(cluster, "w1") and rank_seen(cluster, "w2"),
            timeout=300,
            what="XGBoost's 'got rank' on both workers",
        )
        cluster.kill_worker("w1")
        output, _ = pipeline.communicate(timeout=300)

    assert pipeline.returncode != 0, output[-3000:]
    errors = pystock_errors(output)
    # One line from the step, which the driver repeats as its own reason.
    step_line = re.compile(
        r" ERROR pystock_training: train_model failed: XGBoost training on the Dask cluster failed "
        r"\(\d of the 2 workers it started with are left\): \S.*$"
    )
    assert len(errors) == 2, output[-3000:]
    assert step_line.search(errors[0]), errors
    reason = errors[0].split(" ERROR pystock_training: train_model failed: ", 1)[1]
    assert errors[1].endswith(f"main failed: train_model failed: {reason}")
    assert "Traceback" not in output

    client = MlflowClient(tracking_uri)
    assert client.search_registered_models() == []
    parent, children = pipeline_tree(client)
    assert set(children) == {"train_model"}
    train = children["train_model"]
    assert parent.info.status == train.info.status == "FAILED"
    assert train.data.tags[config.TAG_ERROR] == reason
    assert config.TAG_MODEL_URI not in train.data.tags
    assert train.data.tags[config.TAG_DASK_WORKERS] == "2"
    assert_nothing_running(client)

    # A replacement worker joins; the next run (fewer rounds: the point is the cluster) succeeds.
    # It finds the scheduler as Dask's own tools do, through DASK_SCHEDULER_ADDRESS.
    cluster.add_worker("w3")
    cluster.wait_for_workers(2)
    result = run_pipeline(
        tmp_path,
        tracking_uri,
        "engine=dask",
        f"data_file={parts}",
        "num_boost_round=30",
        env={"DASK_SCHEDULER_ADDRESS": cluster.address},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting an embedded Dask LocalCluster" not in result.stderr
    second, children = assert_promoted_on_dask(client, workers=2, scheduler=cluster.address)
    assert second.info.run_id != parent.info.run_id
    assert second.data.tags[config.TAG_MODEL_VERSION] == "1"
    history = client.get_metric_history(children["train_model"].info.run_id, "validation-logloss")
    assert len(history) > 1


def test_an_unreachable_scheduler_fails_up_front_in_one_line(tmp_path: Path, tracking_uri: str) -> None:
    parts = tmp_path / "parts"
    write_parts(walk_frame(2_000), parts, 2)
    # A port nothing listens on: the connection is refused until the connect timeout.
    address = f"tcp://127.0.0.1:{free_port()}"

    result = run_pipeline(
        tmp_path, tracking_uri, "engine=dask", f"dask_scheduler={address}", f"data_file={parts}"
    )
    assert result.returncode != 0
    errors = pystock_errors(result.stderr)
    assert len(errors) == 1, result.stderr[-3000:]
    assert f"main failed: dask scheduler {address} did not answer within " in errors[0]
    assert "Traceback" not in result.stderr
    client = MlflowClient(tracking_uri)
    # Checked before any step: only the parent run exists, FAILED, with the reason.
    runs = runs_of(client)
    assert [run.info.status for run in runs] == ["FAILED"]
    assert runs[0].data.tags["mlflow.project.entryPoint"] == "main"
    assert f"dask scheduler {address} did not answer" in runs[0].data.tags[config.TAG_ERROR]
    assert client.search_registered_models() == []


def test_a_random_split_on_the_dask_engine_is_refused_before_any_step(
    tmp_path: Path, tracking_uri: str
) -> None:
    parts = tmp_path / "parts"
    write_parts(walk_frame(2_000), parts, 2)

    result = run_pipeline(tmp_path, tracking_uri, "engine=dask", "split=random", f"data_file={parts}")
    assert result.returncode != 0
    errors = pystock_errors(result.stderr)
    assert len(errors) == 1, result.stderr[-3000:]
    assert "engine=dask takes split=time only, got split=random" in errors[0]
    assert "starting an embedded Dask LocalCluster" not in result.stderr
    runs = runs_of(MlflowClient(tracking_uri))
    assert [run.info.status for run in runs] == ["FAILED"]
    assert "split=time only" in runs[0].data.tags[config.TAG_ERROR]
