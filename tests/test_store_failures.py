"""A SQLite tracking store the wrappers cannot use is one line, and a new one is created once.

``mlflow run`` opens the store before any project code runs, so its failures are MLflow
tracebacks; the wrappers (``scripts/cron_train.sh``, ``make train``) run
``pystock_training.store_check`` first. The damaged stores here are real files: a real MLflow
store, truncated or made read-only, and random bytes. The permission cases run as root without
CAP_DAC_OVERRIDE, so file modes apply.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pystock_training.store_check import sqlite_path
from tests.conftest import PROJECT_ROOT, process_group, signal_frame, subprocess_env

NO_DAC_OVERRIDE = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


@pytest.fixture(scope="module")
def healthy_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store MLflow created, with one run in it, to damage copies of."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    client = MlflowClient(f"sqlite:///{path}")
    client.set_terminated(client.create_run("0").info.run_id)
    return path


def random_bytes(store: Path, healthy: Path) -> Path:
    store.write_bytes(os.urandom(64 * 1024))
    return store


def truncated(store: Path, healthy: Path) -> Path:
    data = healthy.read_bytes()
    store.write_bytes(data[: len(data) // 2])
    return store


def read_only_file(store: Path, healthy: Path) -> Path:
    shutil.copyfile(healthy, store)
    store.chmod(0o444)
    return store


def read_only_folder(store: Path, healthy: Path) -> Path:
    shutil.copyfile(healthy, store)
    store.parent.chmod(0o555)
    return store.parent


DAMAGE: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "random bytes": (random_bytes, "is not an SQLite database"),
    "truncated": (truncated, "is truncated"),
    "read-only file": (read_only_file, "for writing: Permission denied"),
    "read-only folder": (read_only_folder, "is not writable by this user"),
}


def wrapper_command(wrapper: str, tmp_path: Path) -> list[str]:
    if wrapper == "cron_train.sh":
        # Real data: without the store check, the run-key check would read the store next.
        data = tmp_path / "data.csv"
        signal_frame(300).to_csv(data, header=False, index=False)
        return [str(PROJECT_ROOT / "scripts" / "cron_train.sh"), str(data)]
    # -o: never rebuild the venv from a test, whatever the requirements' mtimes say.
    return ["make", "-s", "-o", "venv", "-o", ".venv/bin/.installed", "train"]


@pytest.mark.slow
@pytest.mark.parametrize("wrapper", ["cron_train.sh", "make train"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_store_the_wrappers_cannot_use_is_one_line_and_stays_as_it_was(
    tmp_path: Path, healthy_store: Path, wrapper: str, damage: str
) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is missing: cannot drop CAP_DAC_OVERRIDE")
    (tmp_path / "store").mkdir()
    make, reason = DAMAGE[damage]
    named = make(tmp_path / "store" / "mlflow.db", healthy_store)
    store = tmp_path / "store" / "mlflow.db"
    before = store.read_bytes()
    env = subprocess_env(f"sqlite:///{store}") | {
        "PYSTOCK_PYTHON": sys.executable,
        "PYSTOCK_LOCK_DIR": str(tmp_path),
        "HOME": str(tmp_path),
    }
    try:
        result = subprocess.run(
            [*NO_DAC_OVERRIDE, *wrapper_command(wrapper, tmp_path)],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        store.parent.chmod(0o755)
    output = result.stdout + result.stderr

    assert result.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    # make adds its own "make: *** [Makefile:..] Error 1" ("make[1]: ***" under another make, as
    # in CI's `make test`); everything else is the one line.
    lines = [line for line in output.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)]
    assert len(lines) == 1, lines
    assert "ERROR" in lines[0] and str(named) in lines[0] and reason in lines[0], lines
    assert store.read_bytes() == before
    assert sorted(path.name for path in store.parent.iterdir()) == ["mlflow.db"]


CHEAP_PROJECT = """name: cheap
entry_points:
  main:
    command: "python -c pass"
"""


@pytest.mark.slow
def test_three_concurrent_first_runs_on_a_new_store_all_succeed(tmp_path: Path) -> None:
    # The store and its folder do not exist yet: the first `mlflow run`s on a new host.
    store = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{store}"
    project = tmp_path / "cheap"
    project.mkdir()
    (project / "MLproject").write_text(CHEAP_PROJECT)
    env = subprocess_env(uri) | {"PYTHONPATH": str(PROJECT_ROOT)}
    # What the wrappers do: the store check, then `mlflow run`, which opens the store itself.
    command = [
        "bash",
        "-c",
        f"{sys.executable} -m pystock_training.store_check && "
        f"{sys.executable} -m mlflow run {project} --env-manager local",
    ]
    with (
        process_group(command, tmp_path, env) as first,
        process_group(command, tmp_path, env) as second,
        process_group(command, tmp_path, env) as third,
    ):
        outputs = [process.communicate(timeout=600)[0] for process in (first, second, third)]
        codes = [process.returncode for process in (first, second, third)]

    assert codes == [0, 0, 0], [output[-2000:] for output in outputs]
    assert not any("Traceback" in output for output in outputs), outputs
    # MLflow created the store once: its tables were made by one process, under the lock.
    assert sum("creating the tracking store" in output for output in outputs) == 1, outputs
    runs = MlflowClient(uri).search_runs(["0"])
    assert sorted(run.info.status for run in runs) == ["FINISHED"] * 3


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:////abs/mlflow.db", Path("/abs/mlflow.db")),
        ("sqlite:///rel/mlflow.db", Path.cwd() / "rel" / "mlflow.db"),
        ("sqlite:////abs/mlflow.db?timeout=30", Path("/abs/mlflow.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("http://127.0.0.1:5000", None),
        ("postgresql://u@h/db", None),
    ],
)
def test_sqlite_path_reads_the_file_a_uri_names_as_sqlalchemy_does(uri: str, expected: Path | None) -> None:
    assert sqlite_path(uri) == expected
