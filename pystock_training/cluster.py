"""The Dask cluster the dask engine runs on: connecting to it, running tasks on it, its failures.

Imported by the driver, which checks the scheduler before any step starts, so it loads
``distributed`` only inside the functions that need it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from pystock_training.errors import PystockError, first_line

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

# How long to wait for a scheduler to answer, and then for its first worker.
CONNECT_TIMEOUT_S = 10.0
WORKER_WAIT_S = 60.0
# Tasks in flight per worker: enough to keep every worker busy, few enough that results
# waiting to be gathered stay small.
TASKS_PER_WORKER = 2
# How often a wait for tasks checks that workers are left.
POLL_S = 5.0
# The module the scheduler and workers must import to run the engine's tasks.
ENGINE_MODULE = "pystock_training.dask_engine"
T = TypeVar("T")


def scheduler_address(given: str) -> str:
    """The scheduler to use: ``given``, else ``DASK_SCHEDULER_ADDRESS`` (as Dask reads it), else ""."""
    if given:
        return given
    import dask

    return str(dask.config.get("scheduler-address", None) or "")


@contextmanager
def dask_client(given: str = "") -> Iterator[Client]:
    """A client of the scheduler ``scheduler_address(given)`` names, or of an embedded ``LocalCluster``.

    The embedded cluster has one single-threaded worker process per core (XGBoost and pandas
    each run one thread per task) and shares the machine's memory among them; it closes with
    the block. A scheduler that does not answer within ``CONNECT_TIMEOUT_S``, or has no worker
    within ``WORKER_WAIT_S``, fails here, before any work.

    Raises:
        PystockError: The scheduler is unreachable or has no workers.
    """
    from distributed import Client, LocalCluster, fire_and_forget

    # Its INFO lines (every worker and connection opened and closed) drown the step's own.
    logging.getLogger("distributed").setLevel(max(logging.WARNING, logging.getLogger().level))
    address = scheduler_address(given)
    if not address:
        n_workers = _cores()
        logger.info("starting an embedded Dask LocalCluster: %d workers of 1 thread", n_workers)
        with (
            _main_not_reimported(),
            LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster, set_as_default=True) as client,
        ):
            # The workers load the engine (pandas, pyarrow, XGBoost) while the step sets up its
            # run, not when the first part arrives.
            fire_and_forget(
                [
                    client.submit(_load_engine, workers=[worker], allow_other_workers=False, pure=False)
                    for worker in client.scheduler_info()["workers"]
                ]
            )
            yield client
        return
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=True)
    except (OSError, TimeoutError, ValueError) as exc:
        raise PystockError(
            f"dask scheduler {address} did not answer within {CONNECT_TIMEOUT_S:g} s: {first_line(exc)}"
        ) from exc
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except (OSError, TimeoutError) as exc:
            raise PystockError(f"dask scheduler {address} has no workers after {WORKER_WAIT_S:g} s") from exc
        _check_imports(client, address)
        logger.info("connected to the Dask scheduler %s: %d workers", address, n_workers_of(client))
        yield client


def _check_imports(client: Client, address: str) -> None:
    """Refuse a cluster whose scheduler or workers cannot import this package.

    The scheduler unpickles the task graph and the workers run this module's functions: both
    need the package (and the versions in the lock) installed, as the project image has them.

    Raises:
        PystockError: The scheduler or a worker cannot import it.
    """
    where = "scheduler"
    try:
        client.run_on_scheduler(importlib.import_module, ENGINE_MODULE)
        where = "workers"
        client.run(importlib.import_module, ENGINE_MODULE)
    except ImportError as exc:
        raise PystockError(
            f"the Dask {where} at {address} cannot import {ENGINE_MODULE} ({first_line(exc)}): install this "
            "project where the scheduler and workers run (pip install . or the project image), or "
            "start them with PYTHONPATH set to the project directory"
        ) from exc


def _load_engine() -> None:
    importlib.import_module(ENGINE_MODULE)


@contextmanager
def _main_not_reimported() -> Iterator[None]:
    """While the block starts worker processes, they do not import the running script again.

    multiprocessing's spawn imports the parent's ``__main__`` file in each child (for functions
    defined there); a step script imports MLflow and the whole step, seconds per worker that a
    worker never uses: its tasks live in this package, which it imports by name.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__  # type: ignore[union-attr]
    try:
        yield
    finally:
        main.__file__ = path  # type: ignore[union-attr]


def check_scheduler(given: str) -> None:
    """Connect to the scheduler ``given`` (or ``DASK_SCHEDULER_ADDRESS``) and let go; none: nothing.

    Raises:
        PystockError: It does not answer or has no workers.
    """
    if scheduler_address(given):
        with dask_client(given):
            pass


@contextmanager
def cluster_failures(client: Client) -> Iterator[None]:
    """Turn the ways a cluster fails mid-run (a worker lost, the scheduler gone) into one line.

    A map task whose worker dies is run again elsewhere by Dask; XGBoost's training cannot
    lose a member, so a worker lost during ``xgboost.dask.train`` fails the step.

    Raises:
        PystockError: A worker or the scheduler was lost, or no worker is left.
    """
    from distributed import KilledWorker
    from distributed.comm.core import CommClosedError
    from xgboost.core import XGBoostError

    started = n_workers_of(client)
    try:
        yield
    except PystockError:
        raise
    except KilledWorker as exc:
        raise PystockError(f"a Dask task was lost with every worker that ran it: {first_line(exc)}") from exc
    except XGBoostError as exc:
        raise PystockError(
            f"XGBoost training on the Dask cluster failed ({_workers_now(client)} of the {started} workers "
            f"it started with are left): {_xgboost_reason(exc)}"
        ) from exc
    except (CommClosedError, TimeoutError) as exc:
        raise PystockError(
            f"lost the Dask cluster ({_workers_now(client)} of {started} workers left): "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc


def _workers_now(client: Client) -> str:
    try:
        return str(n_workers_of(client))
    except Exception:  # noqa: BLE001 - the scheduler itself may be gone
        return "unknown"


def _xgboost_reason(exc: BaseException) -> str:
    """The line of XGBoost's multi-line collective error that says what failed."""
    for line in str(exc).splitlines():
        text = line.split("]:", 1)[-1].strip()
        if "failed" in text.lower() or "timeout" in text.lower():
            return text
    return first_line(exc)


def n_workers_of(client: Client) -> int:
    return len(client.scheduler_info().get("workers", {}))


def _cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def run_bounded(
    client: Client, function: Callable[..., T], calls: Iterable[tuple[Any, ...]], **shared: Any
) -> Iterator[tuple[int, T]]:
    """``function(*call, **shared)`` for each call on the cluster, a few in flight per worker.

    Yields ``(index of the call, result)`` as they complete; a failed task raises its error here.

    Raises:
        PystockError: Every worker left and none came back within ``WORKER_WAIT_S``.
    """
    from distributed import wait

    pending = list(enumerate(calls))
    pending.reverse()
    window = max(1, TASKS_PER_WORKER * max(1, n_workers_of(client)))
    running: dict[Any, int] = {}
    alone_since: float | None = None
    while pending or running:
        while pending and len(running) < window:
            index, call = pending.pop()
            running[client.submit(function, *call, **shared, pure=False)] = index
        # In short waits: Dask reruns a task whose worker died, but waits forever for a worker
        # when none is left.
        try:
            done, _ = wait(list(running), timeout=POLL_S, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = set()
        if not done:
            if n_workers_of(client):
                alone_since = None
            elif alone_since is None:
                alone_since = time.monotonic()
            elif time.monotonic() - alone_since > WORKER_WAIT_S:
                raise PystockError(
                    f"every Dask worker left the cluster and none came back in {WORKER_WAIT_S:g} s"
                )
            continue
        for future in done:
            index = running.pop(future)
            result = future.result()
            future.release()
            yield index, result
