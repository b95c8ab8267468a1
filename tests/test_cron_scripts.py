"""The cron scripts' own plumbing, with a stand-in for Python that only talks.

The real pipeline and scorer run under these scripts in test_trigger_e2e.py and
test_score_e2e.py; here the stand-in prints many lines, so the scripts' timestamping reader lags
behind the step as it does under a busy cron, and what the scripts promise about their lock and
their last line is checked on its own.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

LINES = 2000

# Answers the trigger's run-key check with "new" (exit 10) and prints LINES lines for anything
# else (`-m mlflow run ...`), as a chatty step would.
STAND_IN = f"""#!/usr/bin/env bash
if [ "$2" = "pystock_training.trigger" ]; then echo "new: not trained yet"; exit 10; fi
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
