"""tracking.raise_on_sigterm in a real process: the first stop raises, every later one is let
through to the cleanup; a stop dropped in a finalizer is delivered again; a SIGINT ignored from
the start stays ignored."""

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
    os.kill(os.getpid(), signal.SIGTERM)  # the parent's death (PR_SET_PDEATHSIG): let through
    print("cleanup still goes on", flush=True)
"""


def test_the_first_stop_raises_and_every_later_one_is_let_through_to_the_cleanup() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    assert result.stdout.splitlines() == [
        "raised: interrupted by SIGINT (Ctrl-C)",
        "cleanup goes on",
        "cleanup still goes on",
    ]
    assert result.returncode == 0
    assert result.stderr.count("while stopping on SIGINT: finishing the cleanup first") == 2


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


SWALLOWED = """
import os, signal, sys, time
from pystock_training.tracking import Terminated, raise_on_sigterm
raise_on_sigterm()

class Finalized:
    def __del__(self):
        # The stop arrives while Python runs a finalizer, where it drops any exception.
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):
            pass

try:
    Finalized()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pass
    print("trained on", flush=True)
except Terminated as exc:
    print("stopped:", exc, flush=True)
"""


def test_a_stop_that_lands_in_a_finalizer_is_delivered_again() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SWALLOWED],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout.splitlines() == ["stopped: terminated by SIGTERM"], result.stderr[-2000:]
    assert result.returncode == 0
