"""Scheduling end to end against a real SQLite store: skip, retrain, cron, kill -9, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pystock_training import config
from tests.conftest import (
    PROJECT_ROOT,
    age_running_runs,
    poll_until,
    process_group,
    signal_frame,
    subprocess_env,
)
from tests.test_pipeline_e2e import mlflow_run

pytestmark = pytest.mark.slow

CRON = PROJECT_ROOT / "scripts" / "cron_train.sh"


def versions(client: MlflowClient) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{config.MODEL_NAME}'"))


def parents(client: MlflowClient):
    return client.search_runs(
        ["0"],
        filter_string="tags.`mlflow.project.entryPoint` = 'main'",
        order_by=["attributes.start_time ASC"],
    )


def write_data(path: Path, n_rows: int = 300, seed: int = 0) -> Path:
    signal_frame(n_rows, seed=seed).to_csv(path, header=False, index=False)
    return path


def test_same_data_trains_once_and_a_changed_row_trains_again(tmp_path, tracking_uri) -> None:
    client = MlflowClient(tracking_uri)
    data = write_data(tmp_path / "data.csv")
    assert mlflow_run(tmp_path, tracking_uri, "-P", f"data_file={data}").returncode == 0
    second = mlflow_run(tmp_path, tracking_uri, "-P", f"data_file={data}")
    assert second.returncode == 0, second.stderr[-2000:]
    assert versions(client) == ["1"]
    first_run, skipped = parents(client)
    assert skipped.data.tags[config.TAG_DECISION] == "skipped"
    assert skipped.data.tags[config.TAG_SKIPPED_FOR] == first_run.info.run_id
    assert skipped.data.tags[config.TAG_MODEL_VERSION] == "1"
    assert skipped.data.tags[config.TAG_RUN_KEY] == first_run.data.tags[config.TAG_RUN_KEY]
    assert "skipped: nothing new" in second.stderr
    # Nothing ran under the skipped parent.
    children = client.search_runs(["0"], filter_string=f"tags.`mlflow.parentRunId` = '{skipped.info.run_id}'")
    assert children == []

    # The same bytes under another name and a fresh mtime: still nothing new.
    renamed = tmp_path / "renamed.csv"
    renamed.write_bytes(data.read_bytes())
    assert mlflow_run(tmp_path, tracking_uri, "-P", f"data_file={renamed}").returncode == 0
    assert versions(client) == ["1"]

    # One row changes: a new version.
    lines = data.read_text().splitlines()
    lines[7] = lines[7][:-1] + ("0" if lines[7].endswith("1") else "1")
    data.write_text("\n".join(lines) + "\n")
    assert mlflow_run(tmp_path, tracking_uri, "-P", f"data_file={data}").returncode == 0
    assert versions(client) == ["1", "2"]

    # force retrains the same key.
    assert mlflow_run(tmp_path, tracking_uri, "-P", f"data_file={data}", "-P", "force=true").returncode == 0
    assert versions(client) == ["1", "2", "3"]


def cron(tmp_path: Path, tracking_uri: str, data: Path) -> subprocess.Popen[str]:
    # cron's bare environment and an unrelated working directory.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PYSTOCK_PYTHON": sys.executable,
        "PYSTOCK_LOCK_FILE": str(tmp_path / "cron.lock"),
    }
    return subprocess.Popen(
        [str(CRON), str(data)], cwd="/", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_two_cron_ticks_together_train_once_and_an_idle_tick_leaves_no_trace(tmp_path, tracking_uri) -> None:
    client = MlflowClient(tracking_uri)
    data = write_data(tmp_path / "new.csv", seed=3)
    ticks = [cron(tmp_path, tracking_uri, data) for _ in range(2)]
    outputs = [tick.communicate(timeout=600)[0] for tick in ticks]
    assert [tick.returncode for tick in ticks] == [0, 0], outputs
    assert versions(client) == ["1"]
    assert sum("already running" in output for output in outputs) == 1, outputs
    # Every line is timestamped.
    for output in outputs:
        assert all(line[:4].isdigit() and "T" in line[:20] for line in output.splitlines() if line), output

    runs_before = len(client.search_runs(["0"], max_results=1000))
    tick = cron(tmp_path, tracking_uri, data)
    output = tick.communicate(timeout=120)[0]
    assert tick.returncode == 0, output
    assert "nothing new" in output
    assert len(client.search_runs(["0"], max_results=1000)) == runs_before


def running_pipeline(
    tmp_path: Path, tracking_uri: str, *params: str
) -> AbstractContextManager[subprocess.Popen[str]]:
    """`mlflow run` in its own process group, killed whole on the way out if it is still running."""
    command = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "--env-manager", "local", *params]
    return process_group(command, tmp_path, subprocess_env(tracking_uri))


def wait_for_running_train(client: MlflowClient, timeout: float = 120) -> str:
    def training() -> str | None:
        runs = client.search_runs(
            ["0"],
            filter_string="attributes.status = 'RUNNING' "
            "and tags.`mlflow.project.entryPoint` = 'train_model'",
        )
        # The data digest tag is set once the data is loaded: training is under way.
        return runs[0].info.run_id if runs and config.TAG_DATA_DIGEST in runs[0].data.tags else None

    return poll_until(training, timeout=timeout, what="a RUNNING train_model with its data loaded")


def slow_training_data(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    # Training must still be running when the test's signal lands, however loaded the machine is:
    # 60k rows train as about 14k distinct rows at about 1 ms a round, so 100k rounds is minutes of
    # headroom. (3,000 rounds once finished before a SIGTERM arrived on a busy CI machine.) The test
    # kills the pipeline long before that, and `running_pipeline` kills it if an assertion fails first.
    data = write_data(tmp_path / "big.csv", n_rows=60_000, seed=5)
    return data, ("-P", f"data_file={data}", "-P", "early_stopping_rounds=0", "-P", "num_boost_round=100000")


def statuses(client: MlflowClient) -> list[str]:
    return [run.info.status for run in client.search_runs(["0"], max_results=1000)]


def test_kill_9_leaves_orphans_that_the_next_start_reaps(tmp_path, tracking_uri) -> None:
    client = MlflowClient(tracking_uri)
    data, params = slow_training_data(tmp_path)
    with running_pipeline(tmp_path, tracking_uri, *params) as pipeline:
        wait_for_running_train(client)
        os.killpg(pipeline.pid, signal.SIGKILL)
        pipeline.wait(timeout=30)
    assert statuses(client).count("RUNNING") == 2  # the parent and train_model, orphaned
    age_running_runs(tracking_uri, hours=1)  # older than the reaper's floor, as a real orphan gets

    small = write_data(tmp_path / "small.csv")
    result = mlflow_run(tmp_path, tracking_uri, "-P", f"data_file={small}", "-P", "reap_after_hours=0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RUNNING" not in statuses(client)
    assert result.stderr.count("marked orphaned run") == 2
    reaped = [run for run in client.search_runs(["0"]) if "reaped" in run.data.tags.get(config.TAG_ERROR, "")]
    assert {run.info.status for run in reaped} == {"FAILED"} and len(reaped) == 2
    del data


def test_sigterm_to_a_step_ends_every_run(tmp_path, tracking_uri) -> None:
    client = MlflowClient(tracking_uri)
    data, params = slow_training_data(tmp_path)
    with running_pipeline(tmp_path, tracking_uri, *params) as pipeline:
        train_run_id = wait_for_running_train(client)
        step_pid = next(
            int(proc.name)
            for proc in Path("/proc").iterdir()
            if proc.name.isdigit() and "train_model.py" in _cmdline(proc) and str(data) in _cmdline(proc)
        )
        os.kill(step_pid, signal.SIGTERM)
        output = pipeline.communicate(timeout=120)[0]
    assert pipeline.returncode != 0
    assert client.get_run(train_run_id).info.status in {"KILLED", "FAILED"}
    assert "RUNNING" not in statuses(client)
    parent = parents(client)[0]
    assert parent.info.status == "FAILED"
    assert "terminated by SIGTERM" in parent.data.tags[config.TAG_ERROR], output[-2000:]
    assert client.search_registered_models() == []


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
