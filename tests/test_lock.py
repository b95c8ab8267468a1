"""The promotion lock on a real SQLite registry: exclusion across processes, release, expiry."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pystock_training.lock import TAG_LEASE, TAG_TOKEN, LockError, lock_name, registry_lock
from tests.conftest import PROJECT_ROOT, poll_until, subprocess_env

# Every test races real processes or waits out a lease on a tracking store: seconds each.
pytestmark = pytest.mark.slow

MODEL = "locked-model"

# Each worker adds 1 to a counter tag, WORKER_ROUNDS times, reading it, writing a record of its
# own, then writing the counter: register_model's read of @champion, its tag writes, the move.
WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mlflow import MlflowClient
    from pystock_training.lock import registry_lock

    client = MlflowClient()
    client.get_registered_model("counter")  # the store is open: only the rounds are left
    use_lock = sys.argv[1] == "lock"
    # Every worker starts its rounds at the same moment, however staggered their start-ups.
    Path(sys.argv[2], "ready-" + sys.argv[3]).touch()
    while not Path(sys.argv[2], "go").exists():
        time.sleep(0.01)
    for _ in range({rounds}):
        if use_lock:
            context = registry_lock("{model}", holder="worker", poll_s=0.05)
        else:
            import contextlib
            context = contextlib.nullcontext()
        with context:
            value = int(client.get_registered_model("counter").tags["value"])
            for record in range(3):
                client.set_registered_model_tag("counter", f"record-{{record}}", str(value))
            client.set_registered_model_tag("counter", "value", str(value + 1))
    """
)
WORKERS = 4
WORKER_ROUNDS = 5


def run_workers(tracking_uri: str, mode: str, barrier: Path) -> int:
    client = MlflowClient(tracking_uri)
    # The record tags exist up front: workers that meet update them, and never insert the same
    # new tag at once (SQLite's unique key would fail one of them instead of losing an update).
    records = {f"record-{record}": "" for record in range(3)}
    client.create_registered_model("counter", tags={"value": "0"} | records)
    script = WORKER.format(rounds=WORKER_ROUNDS, model=MODEL)
    barrier.mkdir()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, mode, str(barrier), str(index)],
            cwd=PROJECT_ROOT,
            env=subprocess_env(tracking_uri),
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(WORKERS)
    ]

    def all_ready() -> bool | None:
        assert all(worker.poll() is None for worker in workers), "a worker ended before its rounds"
        return True if len(list(barrier.glob("ready-*"))) == WORKERS else None

    poll_until(all_ready, timeout=300, what="every worker ready to start its rounds", interval=0.05)
    (barrier / "go").touch()
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr[-2000:]
    return int(client.get_registered_model("counter").tags["value"])


def test_the_lock_keeps_concurrent_read_then_write_from_losing_updates(tracking_uri, tmp_path) -> None:
    assert run_workers(tracking_uri, "lock", tmp_path / "barrier") == WORKERS * WORKER_ROUNDS
    assert [model.name for model in MlflowClient().search_registered_models()] == ["counter"]


def test_without_the_lock_the_same_workers_lose_updates(tracking_uri, tmp_path) -> None:
    # The control: the workload above does race, so the test above can fail.
    assert run_workers(tracking_uri, "none", tmp_path / "barrier") < WORKERS * WORKER_ROUNDS


def test_a_second_holder_waits_and_times_out_in_one_line(tracking_uri) -> None:
    with registry_lock(MODEL, holder="first"):
        started = time.monotonic()
        with (
            pytest.raises(LockError, match=f"could not take {lock_name(MODEL)} within 0.5s") as error,
            registry_lock(MODEL, holder="second", wait_s=0.5, poll_s=0.05),
        ):
            pass
        assert time.monotonic() - started >= 0.5
        assert "\n" not in str(error.value)
    # Released: the next one takes it at once.
    with registry_lock(MODEL, holder="third", wait_s=0):
        pass


def test_the_lock_is_released_when_the_block_raises(tracking_uri) -> None:
    with pytest.raises(RuntimeError), registry_lock(MODEL, holder="raiser"):
        raise RuntimeError("boom")
    assert MlflowClient().search_registered_models() == []


def test_a_dead_holders_lock_expires_after_its_lease(tracking_uri) -> None:
    client = MlflowClient()
    # What a holder killed with -9 inside the section leaves behind.
    client.create_registered_model(lock_name(MODEL), tags={TAG_TOKEN: "dead", TAG_LEASE: "0.3"})
    started = time.monotonic()
    with registry_lock(MODEL, holder="survivor", wait_s=30, poll_s=0.05) as lock:
        waited = time.monotonic() - started
        assert client.get_registered_model(lock_name(MODEL)).tags[TAG_TOKEN] == lock.token
    # It waited out the lease on its own clock, then broke the lock; the tombstone is gone too.
    assert waited >= 0.3
    assert client.search_registered_models() == []


def test_a_holder_that_lost_its_lock_knows_it(tracking_uri) -> None:
    client = MlflowClient()
    with registry_lock(MODEL, holder="slow") as lock:
        lock.ensure_held()
        client.delete_registered_model(lock_name(MODEL))
        client.create_registered_model(lock_name(MODEL), tags={TAG_TOKEN: "someone-else"})
        with pytest.raises(LockError, match="another run broke it"):
            lock.ensure_held()
    # Its release leaves the other holder's lock alone.
    assert client.get_registered_model(lock_name(MODEL)).tags[TAG_TOKEN] == "someone-else"
