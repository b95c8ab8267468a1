"""The thin MLflow layer shared by the steps: step runs, parameter logging, error tags."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException

from pystock_training import PARENT_AT_START, config
from pystock_training.errors import PystockError

logger = logging.getLogger(__name__)


@contextmanager
def step_run(name: str) -> Iterator[Run]:
    """Open (or, under ``mlflow run``, resume) the step's run and end it FINISHED or FAILED.

    A failure is recorded on the run as the ``pystock.error`` tag, so the driver can report the
    step's own one-line reason instead of "run failed".
    """
    # Under `mlflow run` the run exists already (MLFLOW_RUN_ID) and its name was chosen then.
    run_name = None if os.environ.get("MLFLOW_RUN_ID") else name
    with mlflow.start_run(run_name=run_name) as active:
        try:
            yield mlflow.get_run(active.info.run_id)
        except BaseException as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, KeyboardInterrupt):
                # A stop raised inside a tracking-store write leaves that write's session (with
                # SQLite, the database's write lock) held by the traceback's frames: free them
                # first, or ending the run waits on this process's own lock ("database is locked").
                traceback.clear_frames(exc.__traceback__)
                gc.collect()
            try:
                mlflow.set_tag(config.TAG_ERROR, reason[:5000])
                if isinstance(exc, KeyboardInterrupt):
                    # Stopped from outside (SIGTERM, Ctrl-C), not broken: say so.
                    mlflow.end_run("KILLED")
            except Exception:  # noqa: BLE001 - the original error matters more than the tag
                logger.warning("could not record the error on run %s", active.info.run_id)
            raise


def finished_run(run_id: str, what: str, needed_for: str) -> Run:
    """The run a step reads from, which must have ended FINISHED.

    Args:
        run_id: The run.
        what: The parameter that named it, for messages (``train_run_id``).
        needed_for: What this step would do with it, for messages (``to evaluate``).

    Raises:
        PystockError: There is no such run, or it has not ended FINISHED.
    """
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as exc:
        raise PystockError(f"{what} {run_id!r}: no such run in {mlflow.get_tracking_uri()}") from exc
    status = run.info.status
    if status != RunStatus.to_string(RunStatus.FINISHED):
        raise PystockError(f"{what} {run_id} is {status}, not FINISHED: nothing {needed_for}")
    return run


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM.

    A KeyboardInterrupt, because that is what ``mlflow.projects`` handles while it waits for a
    child step: it terminates the child and ends its run, instead of leaving both running.
    """


# How long after a stop dropped in a finalizer it is sent again: long enough for the finalizer
# to return, short next to any step.
REDELIVER_SECONDS = 0.01


def raise_on_sigterm() -> None:
    """Turn SIGTERM (cron timeouts, ``docker stop``, Kubernetes) into ``Terminated`` and SIGINT
    (Ctrl-C) into ``KeyboardInterrupt``, each saying which signal stopped the process.

    Python's default for SIGTERM is to die on the spot, which leaves the run RUNNING forever.
    Only the first signal raises: Ctrl-C reaches every process of the terminal's group, and
    MLflow's project runner then sends each child a SIGTERM as it stops it; raising again would
    cut short the cleanup the first one started and record SIGTERM for what was a Ctrl-C. The
    runner waits for the child to end, so nothing is lost by letting the cleanup finish.
    Called from the scripts' ``__main__`` path only, never on import.
    """
    stopped_by: list[str] = []

    def handler(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if stopped_by:
            # Every later one is let through to the cleanup: one stop reaches a process from
            # several senders (a group signal, its parent's death, MLflow's runner stopping its
            # child), and none of them may cut the cleanup short. SIGKILL ends a cleanup that
            # hangs, as `docker stop` and `timeout -k` send after their grace period.
            logger.warning("%s while stopping on %s: finishing the cleanup first", name, stopped_by[0])
            return
        stopped_by.append(name)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt("interrupted by SIGINT (Ctrl-C)")
        raise Terminated(f"terminated by {name}")

    previous_hook = sys.unraisablehook

    def deliver_again(unraisable: sys.UnraisableHookArgs) -> None:
        # A handler that runs while Python is inside a finalizer or a weakref callback (garbage
        # collection, at any moment) raises there, and Python drops that exception: the step
        # would train on with its stop used up. The stop counts as not received, and is sent
        # again from another thread a moment later, once this finalizer has returned (sent
        # from here, it would be raised here again).
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and stopped_by:
            signum = signal.Signals[stopped_by.pop()]
            again = threading.Timer(
                REDELIVER_SECONDS, signal.pthread_kill, (threading.main_thread().ident, signum)
            )
            again.daemon = True
            again.start()
            return
        previous_hook(unraisable)

    sys.unraisablehook = deliver_again
    signal.signal(signal.SIGTERM, handler)
    # A process started with SIGINT ignored (a background job) keeps ignoring it.
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, handler)


# prctl(2) option: the signal the kernel sends this process when its parent exits.
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent exits (Linux; elsewhere a no-op).

    ``mlflow run`` starts the driver, and the driver each step, as plain children: a SIGTERM to
    the top process alone (``kill <pid>``, ``docker stop`` without an init, a supervisor) kills
    it and leaves the rest training and promoting. With this, each process gets the SIGTERM its
    parent got, in turn, and ends its run as ``raise_on_sigterm`` says. Call it after
    ``raise_on_sigterm``, so the signal is handled, not fatal.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != PARENT_AT_START:
        # The parent died during the imports, before the request took effect: no signal will come.
        os.kill(os.getpid(), signal.SIGTERM)


HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGINT across a block that must not be cut in half, then deliver them.

    Two blocks need it. XGBoost's QuantileDMatrix pulls its data through a ctypes callback, and
    an exception a signal handler raises inside it is swallowed by ctypes and leaves XGBoost's
    iterator half-done (the step then aborts with ``munmap_chunk(): invalid pointer`` instead of
    ending KILLED). The gate's decision, the alias move and the records describing them must
    happen all together or not at all. Held signals go to the handlers that were installed
    before, as soon as the block ends. Signal handlers belong to the main thread, so elsewhere
    this does nothing.
    """
    previous = {signum: signal.getsignal(signum) for signum in HELD_SIGNALS}
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        # None: a handler installed from C, which Python cannot put back.
        yield
        return
    received: list[int] = []
    for signum in HELD_SIGNALS:
        signal.signal(signum, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            # Re-raised against the restored handler: Terminated for SIGTERM under the scripts,
            # KeyboardInterrupt for SIGINT, or the default action.
            signal.raise_signal(signum)


def log_missing_params(run: Run, params: Mapping[str, object]) -> None:
    """Log the step's parameters that the run lacks.

    ``mlflow run`` logs them as the user typed them before the step starts, and MLflow refuses
    to change a logged value, so only the missing ones are logged (a direct call logs them all).
    """
    missing = {key: value for key, value in params.items() if key not in run.data.params}
    if missing:
        mlflow.log_params(missing)


class StepTimer:
    """Wall seconds per phase of a step, logged on its run as ``timing_<phase>_s`` metrics.

    The benchmark and anyone looking at a slow run read the breakdown from the run itself.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        # With the run's start time (set by whoever launched the step, just before its process
        # started) this gives the step's start-up cost: the interpreter and its imports.
        self._created = time.time()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block, adding to the phase's total if it runs more than once."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - started

    def log(self) -> None:
        """Log every phase's total on the active run, and the start-up before the first."""
        metrics = {f"timing_{name}_s": round(value, 3) for name, value in self.seconds.items()}
        run = mlflow.active_run()
        if run is not None and run.info.start_time:
            metrics["timing_startup_s"] = round(max(0.0, self._created - run.info.start_time / 1000), 3)
        mlflow.log_metrics(metrics)
