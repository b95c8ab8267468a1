"""Stop signals from outside: to the top `mlflow run` process alone, as `docker stop` sends it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pystock_training import config
from tests.conftest import poll_until, process_group, subprocess_env
from tests.test_trigger_e2e import (
    parents,
    running_pipeline,
    slow_training_data,
    statuses,
    wait_for_running_train,
)

pytestmark = pytest.mark.slow


def group_members(pgid: int) -> list[int]:
    """The live processes (not zombies) of a process group."""
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp.
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(proc.name))
    return members


def stop_and_wait(process: subprocess.Popen[str], send: Callable[[int], None]) -> str:
    """Send the stop, then wait for the top process and every other process of its group to end."""
    send(process.pid)
    output = process.communicate(timeout=120)[0]
    poll_until(
        lambda: True if group_members(process.pid) == [] else None,
        timeout=120,
        what="every process of the pipeline to exit",
    )
    return output


def assert_stopped_cleanly(client: MlflowClient, process: subprocess.Popen[str], output: str) -> None:
    """Failed exit, no run left RUNNING, nothing registered or promoted after the stop."""
    assert process.returncode != 0
    assert "RUNNING" not in statuses(client), output[-2000:]
    assert client.search_registered_models() == []


def test_sigterm_to_the_top_process_alone_ends_the_whole_pipeline(tmp_path, tracking_uri) -> None:
    client = MlflowClient(tracking_uri)
    _, params = slow_training_data(tmp_path)
    with running_pipeline(tmp_path, tracking_uri, *params) as pipeline:
        train_run_id = wait_for_running_train(client)
        # Only the `mlflow run` CLI, as a supervisor or PID 1 without an init would send it; the
        # driver and the step must end too, each ending its run, instead of training on.
        output = stop_and_wait(pipeline, lambda pid: os.kill(pid, signal.SIGTERM))
    assert_stopped_cleanly(client, pipeline, output)
    # The driver, stopped, cancels the step and MLflow's runner marks the step's run FAILED; the
    # driver ends its own run KILLED (docs/operations.md, "Stop signals").
    assert client.get_run(train_run_id).info.status == "FAILED"
    parent = parents(client)[0]
    assert parent.info.status == "KILLED"
    assert "terminated by SIGTERM" in parent.data.tags.get(config.TAG_ERROR, ""), output[-2000:]


ENTRYPOINT = Path(__file__).resolve().parents[1] / "scripts" / "docker_entrypoint.sh"


@pytest.mark.skipif(shutil.which("tini") is None, reason="tini is not installed (.ci/run installs it)")
def test_the_images_init_passes_a_stop_to_the_whole_pipeline(tmp_path, tracking_uri) -> None:
    # The image's ENTRYPOINT, outside Docker: `docker stop` signals PID 1, which is tini.
    dockerfile = (ENTRYPOINT.parents[1] / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/app/scripts/docker_entrypoint.sh"]' in dockerfile
    client = MlflowClient(tracking_uri)
    _, params = slow_training_data(tmp_path)
    command = ["tini", "-g", "--", str(ENTRYPOINT), *params]
    with process_group(command, tmp_path, subprocess_env(tracking_uri)) as init:
        wait_for_running_train(client)
        output = stop_and_wait(init, lambda pid: os.kill(pid, signal.SIGTERM))
    assert_stopped_cleanly(client, init, output)
    assert "terminated by SIGTERM" in parents(client)[0].data.tags.get(config.TAG_ERROR, ""), output[-2000:]


def test_ctrl_c_is_recorded_as_ctrl_c_and_ends_every_run(tmp_path, tracking_uri) -> None:
    # A terminal's Ctrl-C sends SIGINT to the whole foreground group; MLflow's runner then sends
    # each child a SIGTERM as it stops it. The records must say what the user did.
    client = MlflowClient(tracking_uri)
    _, params = slow_training_data(tmp_path)
    with running_pipeline(tmp_path, tracking_uri, *params) as pipeline:
        train_run_id = wait_for_running_train(client)
        output = stop_and_wait(pipeline, lambda pid: os.killpg(pid, signal.SIGINT))
    assert_stopped_cleanly(client, pipeline, output)
    for run in (client.get_run(train_run_id), parents(client)[0]):
        assert run.info.status in {"KILLED", "FAILED"}
        assert run.data.tags.get(config.TAG_ERROR) == "interrupted by SIGINT (Ctrl-C)", output[-2000:]
