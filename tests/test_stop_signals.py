"""tracking.raise_on_sigterm in a real process: the first stop raises, the next is let through
to the cleanup, the one after kills; a SIGINT ignored from the start stays ignored."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

# Every test starts a Python process and signals it.
pytestmark = pytest.mark.slow

SCRIPT = """
import os, signal, sys
from pystock_training.tracking import raise_on_sigterm
raise_on_sigterm()
try:
    os.kill(os.getpid(), signal.SIGINT)
except KeyboardInterrupt as exc:
    print("raised:", exc, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # MLflow's runner stopping this child: let through
    print("cleanup goes on", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # a third stop: the default action
    print("not reached", flush=True)
"""


def test_the_first_stop_raises_the_second_is_let_through_the_third_kills() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    assert result.stdout.splitlines() == ["raised: interrupted by SIGINT (Ctrl-C)", "cleanup goes on"]
    assert result.returncode == -signal.SIGTERM


def test_a_sigint_ignored_from_the_start_stays_ignored() -> None:
    code = (
        "import os, signal\n"
        "from pystock_training.tracking import raise_on_sigterm\n"
        "raise_on_sigterm()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "print('still here')\n"
    )
    # What a shell does for a background job: SIGINT ignored before the program starts.
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "still here"
