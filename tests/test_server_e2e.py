"""The production path: a PostgreSQL-backed `mlflow server` with served artifacts, for real.

The pipeline runs through the training image's own command (scripts/docker_entrypoint.sh), run
outside Docker with the same environment variables: this machine has no Docker engine, so that
stands in for `docker run`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Run

from pystock_training import config
from tests.conftest import (
    PROJECT_ROOT,
    age_running_runs,
    poll_until,
    process_group,
    signal_frame,
    subprocess_env,
)
from tests.servers import MlflowServer, free_port, postgres_cluster

pytestmark = pytest.mark.slow

ENTRYPOINT = PROJECT_ROOT / "scripts" / "docker_entrypoint.sh"
SECRET = "s3cret-Tr4cking-Passw0rd"


@pytest.fixture(scope="module")
def backend():
    with postgres_cluster() as uri:
        yield uri


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(backend, base / "artifacts", base / "server.log")
    server.start()
    yield server
    server.stop()


def image_command(cwd: Path, uri: str, *args: str, timeout: float = 600, **extra: str):
    """The image's command with the environment `docker run -e ...` would give it."""
    env = (
        subprocess_env(uri)
        | {
            "MLFLOW_TRACKING_USERNAME": "pystock",
            "MLFLOW_TRACKING_PASSWORD": SECRET,
        }
        | extra
    )
    return subprocess.run(
        [str(ENTRYPOINT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_pipeline_against_the_server_registers_a_champion_that_loads(server, tmp_path, monkeypatch) -> None:
    started = time.monotonic()
    result = image_command(tmp_path, server.uri)
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"pipeline against the PostgreSQL-backed server: {wall:.1f}s wall")  # noqa: T201 - for the note

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    client = MlflowClient(server.uri)
    runs = client.search_runs(["0"], max_results=100)
    assert {run.info.status for run in runs} == {"FINISHED"} and len(runs) == 4
    champion = client.get_model_version_by_alias(config.MODEL_NAME, config.ALIAS_CHAMPION)
    model = mlflow.pyfunc.load_model(f"models:/{config.MODEL_NAME}@{config.ALIAS_CHAMPION}")
    rows = pd.read_csv(PROJECT_ROOT / config.DATA_FILE, header=None).iloc[:20, :-1]
    rows.columns = [f"f{i}" for i in range(14)]
    proba = np.asarray(model.predict(rows))
    assert proba.shape == (20,) and np.all((proba > 0) & (proba < 1))
    assert str(champion.version) == "1"

    # The credentials reached MLflow only through its own variables: nowhere in what was logged.
    assert SECRET not in result.stdout + result.stderr
    for run in runs:
        assert SECRET not in repr(run.data.params) + repr(run.data.tags)
        local = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, dst_path=str(tmp_path / run.info.run_id)
        )
        for path in Path(local).rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in repr(champion.tags)


def test_the_champion_answers_invocations_from_mlflow_models_serve(server, tmp_path) -> None:
    port = free_port()
    env = subprocess_env(server.uri)
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{config.MODEL_NAME}@{config.ALIAS_CHAMPION}",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:

        def answers() -> bool | None:
            assert serve.poll() is None, serve.stderr.read().decode()[-3000:]
            try:
                return True if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok else None
            except requests.RequestException:
                return None

        poll_until(answers, timeout=120, what="mlflow models serve's /ping", interval=0.5)
        rows = signal_frame(7, seed=9).iloc[:, :-1]
        body = {
            "dataframe_split": {"columns": [f"f{i}" for i in range(14)], "data": rows.to_numpy().tolist()}
        }
        response = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
        assert response.status_code == 200, response.text
        predictions = np.asarray(response.json()["predictions"], dtype=float)
        assert predictions.shape == (7,)
        assert np.all((predictions > 0) & (predictions < 1))
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)


def test_an_unreachable_server_fails_fast_with_one_line_naming_it(tmp_path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = image_command(tmp_path, uri, timeout=120, PYSTOCK_PREFLIGHT_TIMEOUT="5")
    assert result.returncode != 0
    assert time.monotonic() - started < 60
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and uri in errors[0] and "unreachable" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_the_image_refuses_to_start_without_a_tracking_uri(tmp_path) -> None:
    env = {key: value for key, value in subprocess_env("unused").items() if key != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [str(ENTRYPOINT)], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "MLFLOW_TRACKING_URI is not set" in result.stderr


# The training the server dies in: 60k rows, about 14k distinct training rows, on one thread.
# XGBoost's default of every core makes OpenMP spin against other processes on a loaded machine
# (95-180 ms a round on two busy cores), which makes a round's time unpredictable. With the
# server dead a round takes 20-25 ms on two cores under a load of 4-9: 1,500 rounds end 30-34 s
# after the kill, which comes 0.5-1.1 s (some 25-55 rounds) after the first logged round.
KILLED_SERVER_ROUNDS = 1_500
# Logged by autolog on the train_model run after every round.
TRAINING_ROUND_METRIC = "validation-logloss"
KILLED_SERVER_ENV = {
    "OMP_NUM_THREADS": "1",
    # With the server gone, autolog's metric logger retries its failed batch after every round
    # and swallows the error, so training runs to its last round, each round paying a failed
    # request: about 7 s with the image's retry defaults. Without retries it is a
    # refused connection, so the step gets to the calls that do fail soon after training ends.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
}


def image_pipeline(
    cwd: Path, uri: str, *args: str, **extra: str
) -> AbstractContextManager[subprocess.Popen[str]]:
    """The image's command in its own process group, killed whole on the way out if still running."""
    return process_group([str(ENTRYPOINT), *args], cwd, subprocess_env(uri) | extra)


def wait_for_first_round(
    client: MlflowClient, pipeline: subprocess.Popen[str], timeout: float = 180
) -> tuple[Run, list[Metric]]:
    """The train_model run once autolog has logged a round, read after that round's history."""

    def first_round() -> tuple[Run, list[Metric]] | None:
        assert pipeline.poll() is None, (
            f"the pipeline ended before training: {pipeline.communicate()[0][-3000:]}"
        )
        experiment_ids = [experiment.experiment_id for experiment in client.search_experiments()]
        runs = client.search_runs(
            experiment_ids,
            "tags.`mlflow.project.entryPoint` = 'train_model' and attributes.status = 'RUNNING'",
        )
        history = client.get_metric_history(runs[0].info.run_id, TRAINING_ROUND_METRIC) if runs else []
        # The run read after its history: still RUNNING once those rounds were logged.
        return (client.get_run(runs[0].info.run_id), history) if history else None

    return poll_until(first_round, timeout=timeout, what="a logged training round", interval=0.05)


def test_server_killed_during_training_fails_cleanly_and_the_next_run_recovers(
    backend, server, tmp_path
) -> None:
    # A server process of its own, so the kill does not disturb the other tests, on the same
    # database and artifact store (the champion registered earlier must stay readable).
    server = MlflowServer(backend, server.artifacts, tmp_path / "server.log")
    server.start()
    data = tmp_path / "big.csv"
    signal_frame(60_000, seed=5).to_csv(data, header=False, index=False)
    params = ("-P", f"data_file={data}", "-P", "early_stopping_rounds=0")
    params += ("-P", f"num_boost_round={KILLED_SERVER_ROUNDS}")
    try:
        with image_pipeline(tmp_path, server.uri, *params, **KILLED_SERVER_ENV) as pipeline:
            train_run, history = wait_for_first_round(MlflowClient(server.uri), pipeline)
            server.stop(signal.SIGKILL)
            killed = time.monotonic()
            since_first_round = time.time() - history[0].timestamp / 1000
            last_round = max(metric.step for metric in history)
            assert train_run.info.status == "RUNNING"
            assert 0 <= last_round < KILLED_SERVER_ROUNDS - 1
            try:
                output = pipeline.communicate(timeout=240)[0]
            except subprocess.TimeoutExpired as exc:
                tail = (exc.output or b"")[-3000:].decode(errors="replace")
                raise AssertionError(f"the pipeline still ran 240 s after the server died: {tail}") from None
            failed_after = time.monotonic() - killed
    finally:
        server.stop(signal.SIGKILL)
    print(  # noqa: T201 - for the note
        f"server killed {since_first_round:.2f}s after round 0 was logged (last logged round "
        f"{last_round} of {KILLED_SERVER_ROUNDS}); the pipeline exited {pipeline.returncode} "
        f"{failed_after:.1f}s after the kill"
    )
    assert pipeline.returncode != 0, output[-3000:]
    errors = [line for line in output.splitlines() if " ERROR " in line]
    address = server.uri.removeprefix("http://")
    assert any("train_model failed: " in line and address in line for line in errors), output[-3000:]

    # The run the kill left RUNNING is made older than the reaper's floor, as a real orphan gets.
    age_running_runs(backend, hours=1)
    server.start()
    try:
        small = tmp_path / "small.csv"
        signal_frame(300, seed=6).to_csv(small, header=False, index=False)
        result = image_command(tmp_path, server.uri, "-P", f"data_file={small}", "-P", "reap_after_hours=0")
        assert result.returncode == 0, result.stderr[-3000:]
        client = MlflowClient(server.uri)
        # The server never heard of the rounds after the kill, and the run it left RUNNING is reaped.
        logged = client.get_metric_history(train_run.info.run_id, TRAINING_ROUND_METRIC)
        assert max(metric.step for metric in logged) < KILLED_SERVER_ROUNDS - 1
        assert client.get_run(train_run.info.run_id).info.status == "FAILED"
        experiment_ids = [experiment.experiment_id for experiment in client.search_experiments()]
        statuses = [run.info.status for run in client.search_runs(experiment_ids, max_results=1000)]
        assert "RUNNING" not in statuses
    finally:
        server.stop()


def test_compose_wires_postgres_server_and_trainer() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "mlflow", "trainer", "dask-scheduler", "dask-worker"}
    # The dask services start only when asked for (--profile dask), from the trainer's image,
    # able to import the package, with the data where the trainer names it, and no open port.
    for name in ("dask-scheduler", "dask-worker"):
        service = services[name]
        assert service["profiles"] == ["dask"] and service["build"]["target"] == "trainer", name
        assert service["environment"]["PYTHONPATH"] == "/app" and "ports" not in service, name
    assert services["dask-worker"]["entrypoint"][3:6] == ["dask", "worker", "tcp://dask-scheduler:8786"]
    assert "./data:/data:ro" in services["dask-worker"]["volumes"]
    assert "8786" in services["dask-scheduler"]["entrypoint"]
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["trainer"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert all("healthcheck" in services[name] for name in ("postgres", "mlflow"))
    server_env = services["mlflow"]["environment"]
    assert server_env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert "mlflow" in server_env["MLFLOW_ALLOWED_HOSTS"].split(",")
    assert services["trainer"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert (
        services["mlflow"]["build"]["target"] == "server"
        and services["trainer"]["build"]["target"] == "trainer"
    )
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/app/scripts/docker_entrypoint.sh"]' in dockerfile
    assert (
        "mlflow run . --env-manager local" in (PROJECT_ROOT / "scripts" / "docker_entrypoint.sh").read_text()
    )
