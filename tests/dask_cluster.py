"""A real multi-process Dask cluster for the dask engine's tests, and the tables they train on.

`DaskCluster` starts `dask scheduler` and `dask worker` as the README tells users to (the
package importable through PYTHONPATH, the working directory anywhere), each in its own
process group with its log in a file, and stops every one of them at teardown, also when a
test fails. Nothing here sleeps for a fixed time: it waits for the port, the workers, a line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import PROJECT_ROOT, poll_until
from tests.servers import free_port

DASK = str(Path(sys.executable).parent / "dask")


def walk_frame(n_rows: int, seed: int = 0, repeat: float = 0.7) -> pd.DataFrame:
    """Sliding 15-day windows of a random walk's up/down days: 14 int8 flags, then the label.

    A day repeats the one before with probability ``repeat``, so the last flag predicts the
    label, and with 14 flags the rows repeat (at most 16,384 differ) as the product's do.
    """
    rng = np.random.default_rng(seed)
    flips = rng.random(n_rows + 14) >= repeat
    days = (np.cumsum(flips) % 2).astype(np.int8)
    windows = np.lib.stride_tricks.sliding_window_view(days, 15)
    return pd.DataFrame(windows.copy(), columns=[str(column) for column in range(15)])


def float_frame(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """14 float32 features (noisy returns) and a 0/1 label that depends on two of them."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_rows, 14)).astype(np.float32)
    score = features[:, 0] + 0.5 * features[:, 3] + rng.normal(scale=1.0, size=n_rows)
    frame = pd.DataFrame(features, columns=[str(column) for column in range(14)])
    frame["14"] = (score > 0).astype(np.int8)
    return frame


def write_parts(frame: pd.DataFrame, folder: Path, n_parts: int, suffix: str = ".parquet") -> list[Path]:
    """``frame`` cut into ``n_parts`` consecutive parts ``part-NNNNN<suffix>``, in time order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, rows in enumerate(np.array_split(np.arange(len(frame)), n_parts)):
        path = folder / f"part-{index:05d}{suffix}"
        part = frame.iloc[rows]
        if suffix == ".csv":
            part.to_csv(path, header=False, index=False)
        else:
            part.to_parquet(path, index=False)
        paths.append(path)
    return paths


def port_answers(port: int) -> bool | None:
    with socket.socket() as sock:
        sock.settimeout(1)
        return True if sock.connect_ex(("127.0.0.1", port)) == 0 else None


class DaskCluster:
    """`dask scheduler` and `dask worker` processes on loopback ports, logging into ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # The processes run from here, not from the project: the package must come from PYTHONPATH.
        self.cwd = log_dir / "cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)

    def _start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "DASK_"))}
        env["PYTHONPATH"] = str(PROJECT_ROOT)
        with self.log(name).open("ab") as log:
            process = subprocess.Popen(
                command, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes[name] = process
        return process

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, n_workers: int = 2, timeout: float = 120) -> None:
        """The scheduler, then ``n_workers`` workers; back when the scheduler counts them all."""
        self._start(
            "scheduler",
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
        )
        poll_until(
            lambda: self._alive("scheduler") and port_answers(self.port), timeout=timeout, what=self.address
        )
        names = [f"w{index}" for index in range(1, n_workers + 1)]
        for name in names:
            self.add_worker(name, wait=False)
        self.wait_for_workers(n_workers, timeout=timeout)
        assert self.worker_names() == set(names)

    def add_worker(self, name: str, *, wait: bool = True, timeout: float = 120) -> None:
        """Start a single-threaded worker (with its nanny) and, with ``wait``, until the scheduler has it."""
        command = [DASK, "worker", self.address, "--nthreads", "1", "--no-dashboard", "--name", name]
        self._start(name, [*command, "--local-directory", str(self.log_dir / name)])
        if wait:
            poll_until(
                lambda: self._alive(name) and (name in self.worker_names() or None),
                timeout=timeout,
                what=f"worker {name}",
                interval=0.5,
            )

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group (its nanny and the worker process)."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def worker_names(self) -> set[str]:
        from distributed import Client

        with Client(self.address, timeout=10) as client:
            return {info["name"] for info in client.scheduler_info(n_workers=-1)["workers"].values()}

    def wait_for_workers(self, n_workers: int, timeout: float = 120) -> None:
        from distributed import Client

        for name in self.processes:
            self._alive(name)
        with Client(self.address, timeout=10) as client:
            client.wait_for_workers(n_workers, timeout=timeout)

    def _alive(self, name: str) -> bool:
        process = self.processes[name]
        if process.poll() is not None:
            raise RuntimeError(
                f"dask {name} exited ({process.returncode}): {self.log(name).read_text()[-3000:]}"
            )
        return True

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes.values():
            process.wait(timeout=30)


@contextlib.contextmanager
def dask_cluster(log_dir: Path, n_workers: int = 2) -> Iterator[DaskCluster]:
    """A started `DaskCluster`, every process of it killed on the way out."""
    cluster = DaskCluster(log_dir)
    try:
        cluster.start(n_workers)
        yield cluster
    finally:
        cluster.stop()
