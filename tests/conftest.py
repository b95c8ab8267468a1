"""Shared fixtures: a real, empty SQLite tracking store per test, and small real datasets."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import mlflow
import numpy as np
import pandas as pd
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An absolute sqlite URI in tmp_path, set for this process and any subprocess."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # A new store puts its default artifact root at ./mlruns of whoever creates it: keep it here.
    monkeypatch.chdir(tmp_path)
    # A stray MLFLOW_RUN_ID would make the steps resume someone else's run.
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run("FAILED")
    mlflow.set_tracking_uri(None)


def signal_frame(n_rows: int = 600, seed: int = 0, follow: float = 0.9) -> pd.DataFrame:
    """14 random 0/1 features; the label copies the last feature with probability ``follow``."""
    rng = np.random.default_rng(seed)
    features = rng.integers(0, 2, size=(n_rows, 14))
    copy = rng.random(n_rows) < follow
    label = np.where(copy, features[:, -1], 1 - features[:, -1])
    return pd.DataFrame(np.column_stack([features, label]))


@pytest.fixture
def signal_csv(tmp_path: Path) -> Path:
    """A headerless CSV with a learnable signal, in the shipped file's format."""
    path = tmp_path / "signal.csv"
    signal_frame().to_csv(path, header=False, index=False)
    return path


def subprocess_env(tracking_uri: str) -> dict[str, str]:
    """Environment for `mlflow run`: this venv first on PATH (the steps run `python`)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@contextlib.contextmanager
def process_group(command: list[str], cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A command in its own process group, whose every process is killed on the way out.

    A failed assertion must not leave a long training behind on a shared machine, also when the
    test stopped the group's leader itself and the rest of the group lives on.
    """
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.returncode is None:
            process.communicate()


def poll_until(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2) -> T:
    """Call ``check`` until it returns something other than None, and return that.

    The test goes on when the event it needs has happened (a port answers, a run logs a round),
    however long that takes on a busy machine, up to ``timeout``; the pause only spaces the polls.

    Raises:
        AssertionError: Nothing came within ``timeout`` seconds; the message names ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout:g}s")
        time.sleep(interval)


def age_running_runs(store_uri: str, hours: float) -> None:
    """Move the start of every RUNNING run ``hours`` back, straight in the store's database.

    The reaper never touches a run younger than trigger.MIN_REAP_AGE_HOURS, so a test that
    orphans runs with a kill -9 makes them look as old as a real orphan would be by then.
    """
    import sqlalchemy

    engine = sqlalchemy.create_engine(store_uri)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE runs SET start_time = start_time - :ms WHERE status = 'RUNNING'"),
            {"ms": int(hours * 3_600_000)},
        )
    engine.dispose()
