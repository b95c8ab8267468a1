"""The cron scripts' own plumbing, with a stand-in for Python that only talks.

The real pipeline and scorer run under these scripts in test_trigger_e2e.py and
test_score_e2e.py; here the stand-in prints many lines, so the scripts' timestamping reader lags
behind the step as it does under a busy cron, and what the scripts promise about their lock and
their last line is checked on its own.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, process_group

LINES = 2000

# Passes the store check, answers the trigger's run-key check with "new" (exit 10) and prints
# LINES lines for anything else (`-m mlflow run ...`), as a chatty step would.
STAND_IN = f"""#!/usr/bin/env bash
case $2 in
  pystock_training.store_check | pystock_training.preflight) exit 0 ;;
  pystock_training.trigger) echo "new: not trained yet"; exit 10 ;;
esac
for i in $(seq {LINES}); do echo "step line $i"; done
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    python = tmp_path / "python"
    python.write_text(STAND_IN)
    python.chmod(0o755)
    return python


def run_script(tmp_path: Path, python: Path, *args: str) -> tuple[int, bool, list[str]]:
    """Run a script; its exit code, whether its lock was free the moment it exited, its lines.

    Its output goes to a file, not a pipe: reading a pipe to its end would also wait for any
    process the script left behind holding it.
    """
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PYSTOCK_PYTHON": str(python),
        "PYSTOCK_LOCK_FILE": str(tmp_path / "train.lock"),
        "PYSTOCK_LOCK_DIR": str(tmp_path),
    }
    log = tmp_path / "cron.log"
    with log.open("w") as output:
        process = subprocess.Popen(list(args), cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT)
        code = process.wait(timeout=120)
    (lock,) = tmp_path.glob("*.lock")
    free = lock_is_free(lock)
    return code, free, log.read_text().splitlines()


def lock_is_free(lock: Path) -> bool:
    return subprocess.run(["flock", "-n", str(lock), "true"], check=False).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("script", ["cron_train.sh", "cron_score.sh"])
def test_the_lock_is_free_and_the_last_line_is_the_scripts_own_when_it_exits(
    tmp_path: Path, stand_in: Path, script: str
) -> None:
    (tmp_path / "in.csv").write_text("0\n")
    args = ["in.csv"] if script == "cron_train.sh" else ["in.csv", "out.csv"]
    code, lock_free, lines = run_script(tmp_path, stand_in, str(PROJECT_ROOT / "scripts" / script), *args)

    assert code == 0, lines[-20:]
    # No reader of the step's output outlives the script holding the lock: the next tick,
    # started right away, must not find it "already running".
    assert lock_free
    assert sum("step line" in line for line in lines) == LINES
    # Every line of the step comes before the script's own last word (cron_train has none on
    # success: the pipeline's summary is its last line).
    if script == "cron_score.sh":
        assert lines[-1].endswith(f"scored {tmp_path}/in.csv into {tmp_path}/out.csv"), lines[-3:]
        assert lines[-2].endswith(f"step line {LINES}"), lines[-3:]
    else:
        assert lines[-1].endswith(f"step line {LINES}"), lines[-3:]


# Root without the capabilities that let it open any file, so file modes and owners apply to it.
NO_DAC_OVERRIDE = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]
OTHER_UID = 65534  # nobody


def needs_setpriv() -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is missing: cannot run the script without CAP_DAC_OVERRIDE")


def run_as_user(
    tmp_path: Path, python: Path, args: list[str], env: dict[str, str], timeout: float = 120
) -> tuple[int, list[str]]:
    """Run a script as root without CAP_DAC_OVERRIDE, in cron's bare environment plus ``env``."""
    full_env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PYSTOCK_PYTHON": str(python),
    } | env
    log = tmp_path / "cron.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*NO_DAC_OVERRIDE, *args], cwd=tmp_path, env=full_env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            code = process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return code, log.read_text().splitlines()


def script_args(tmp_path: Path, script: str) -> list[str]:
    (tmp_path / "in.csv").write_text("0\n")
    extra = ["in.csv"] if script == "cron_train.sh" else ["in.csv", "out.csv"]
    return [str(PROJECT_ROOT / "scripts" / script), *extra]


def owned_by_another_account(path: Path, directory: bool = False) -> Path:
    if directory:
        path.mkdir(parents=True, mode=0o755)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        path.chmod(0o644)
    os.chown(path, OTHER_UID, OTHER_UID)
    return path


@pytest.mark.parametrize("script", ["cron_train.sh", "cron_score.sh"])
def test_a_lock_another_account_owns_is_one_error_line_not_already_running(
    tmp_path: Path, stand_in: Path, script: str
) -> None:
    needs_setpriv()
    # cron_train names its lock file; cron_score's lock lives in a folder it cannot write.
    if script == "cron_train.sh":
        lock = owned_by_another_account(tmp_path / "locks" / "train.lock")
        env = {"PYSTOCK_LOCK_FILE": str(lock)}
    else:
        lock = owned_by_another_account(tmp_path / "locks", directory=True)
        env = {"PYSTOCK_LOCK_DIR": str(lock)}
    code, lines = run_as_user(tmp_path, stand_in, script_args(tmp_path, script), env)

    # Exit 0 with "already running" would be silent under cron for good.
    assert code != 0, lines
    assert len(lines) == 1, lines
    assert "ERROR: cannot open the lock file" in lines[0] and str(lock) in lines[0], lines
    assert not any("step line" in line for line in lines)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["cron_train.sh", "cron_score.sh"])
def test_a_lock_another_account_left_in_the_shared_tmp_does_not_stop_the_job(
    tmp_path: Path, stand_in: Path, script: str
) -> None:
    needs_setpriv()
    shared = tmp_path / "shared-tmp"
    shared.mkdir(mode=0o1777)
    # The lock paths a shared TMPDIR gave, which another account can create first.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    keyed = uri if script == "cron_train.sh" else str(tmp_path / "out.csv")
    lock_id = hashlib.sha256(keyed.encode()).hexdigest()[:12]
    name = "pystock-training" if script == "cron_train.sh" else "pystock-score"
    owned_by_another_account(shared / f"{name}-{lock_id}.lock")
    (tmp_path / "home").mkdir()

    code, lines = run_as_user(tmp_path, stand_in, script_args(tmp_path, script), {"TMPDIR": str(shared)})

    assert code == 0, lines[-5:]
    assert sum("step line" in line for line in lines) == LINES, lines[:5]
    # The lock is in a folder of this user's own that nobody else can enter.
    private = tmp_path / "home" / ".cache" / "pystock-training"
    assert private.stat().st_uid == os.getuid()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert [path.name for path in private.iterdir()] == [f"{name}-{lock_id}.lock"]


@pytest.mark.parametrize("script", ["cron_train.sh", "cron_score.sh"])
def test_a_private_lock_folder_another_account_created_is_one_error_line(
    tmp_path: Path, stand_in: Path, script: str
) -> None:
    needs_setpriv()
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    foreign = owned_by_another_account(home / ".cache" / "pystock-training", directory=True)

    code, lines = run_as_user(
        tmp_path,
        stand_in,
        script_args(tmp_path, script),
        {"HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path)},
    )

    assert code != 0, lines
    assert len(lines) == 1 and f"ERROR: lock folder {foreign} is not a folder owned by" in lines[0], lines


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["cron_train.sh", "cron_score.sh"])
def test_a_dead_tracking_server_is_one_line_within_the_preflight_bound(tmp_path: Path, script: str) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": uri,
        "PYSTOCK_PYTHON": sys.executable,
        "PYSTOCK_LOCK_DIR": str(tmp_path),
    }
    started = time.monotonic()
    with process_group(script_args(tmp_path, script), tmp_path, env) as process:
        # Waits past the bound, so that a slow failure is seen as slow rather than as a timeout.
        output = process.communicate(timeout=120)[0]
    elapsed = time.monotonic() - started

    assert process.returncode == 1, output
    lines = output.splitlines()
    assert len(lines) == 1, lines
    assert f"tracking server {uri} is unreachable" in lines[0], lines
    # Bounded: at most 30 s (the preflight gives up after 15).
    assert elapsed < 30
