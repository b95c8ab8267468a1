"""Real servers for the production-path tests: a throw-away PostgreSQL cluster and `mlflow server`.

Every process started here is stopped at teardown, also when a test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.conftest import PROJECT_ROOT, poll_until, subprocess_env

SERVER_SCRIPT = PROJECT_ROOT / "scripts" / "mlflow_server.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bin(name: str) -> str:
    found = sorted(str(path) for path in Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found: apt-get install postgresql (.ci/run does)")
    return found[-1]


def _as_postgres(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root, and CI runs as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A fresh cluster on a loopback port with a database `mlflow`; yields its SQLAlchemy URI."""
    # Its own folder under /tmp: pytest's tmp dirs are root-only, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="pystock-pg-"))
    data, sockets = base / "pgdata", base / "pgsock"
    data.mkdir()
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (base, data, sockets):
            shutil.chown(path, "postgres", "postgres")
    port = free_port()
    pg_ctl = [pg_bin("pg_ctl"), "-D", str(data), "-l", str(base / "server.log")]
    try:
        subprocess.run(
            _as_postgres([pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_postgres([*pg_ctl, "-o", options, "-w", "start"]), check=True, capture_output=True)
        subprocess.run(
            _as_postgres(
                [pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"]
            ),
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_postgres([*pg_ctl, "-m", "immediate", "stop"]), check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def pg_dump(uri: str) -> bytes:
    """The whole database behind a `postgres_cluster` URI, as SQL: every table's rows."""
    address = uri.split("@", 1)[1].split("/", 1)[0]
    host, port = address.split(":")
    return subprocess.run(
        _as_postgres([pg_bin("pg_dump"), "-h", host, "-p", port, "-U", "postgres", "mlflow"]),
        check=True,
        capture_output=True,
    ).stdout


class MlflowServer:
    """`scripts/mlflow_server.sh` as a subprocess, configured as docker-compose.yml configures it.

    ``auth`` is the basic-auth environment (secret key, admin, trainer and reader passwords) as
    the compose file passes it; without it the server runs with PYSTOCK_SERVER_AUTH=none.
    """

    def __init__(
        self,
        backend_uri: str,
        artifacts: Path,
        log: Path,
        port: int | None = None,
        auth: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend_uri, self.artifacts, self.log = backend_uri, artifacts, log
        self.auth = auth
        # With auth, /health answers before the accounts exist: the script touches this once they do.
        self.ready_file = log.parent / f"mlflow-ready-{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        env = subprocess_env(self.uri) | {
            "MLFLOW_BACKEND_STORE_URI": self.backend_uri,
            "MLFLOW_ARTIFACTS_DIR": str(self.artifacts),
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(self.port),
            "MLFLOW_WORKERS": "1",
        }
        if self.auth is None:
            env["PYSTOCK_SERVER_AUTH"] = "none"
        else:
            env |= self.auth | {
                "PYSTOCK_SERVER_AUTH": "basic-auth",
                "MLFLOW_READY_FILE": str(self.ready_file),
            }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SERVER_SCRIPT)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            poll_until(self._healthy, timeout=timeout, what=f"{self.uri}/health", interval=0.5)
        except AssertionError as exc:
            self.stop()
            raise RuntimeError(
                f"mlflow server did not answer ({exc}): {self.log.read_text()[-3000:]}"
            ) from exc

    def _healthy(self) -> bool | None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-3000:]}")
        if self.auth is not None and not self.ready_file.exists():
            return None
        try:
            return True if requests.get(f"{self.uri}/health", timeout=2).ok else None
        except requests.RequestException:
            return None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
