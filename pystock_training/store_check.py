"""Is the SQLite tracking store usable? Checked, and created under a lock, before a run starts.

``mlflow run`` opens the tracking store before any project code runs, so a store it cannot use
ends in an MLflow traceback: a read-only file or folder, a file that is not a database or was
truncated. A brand-new store is worse: MLflow creates its tables and runs its Alembic migrations
in every process that finds them missing, so concurrent first runs race and all but one fail.
The wrappers (the cron scripts, ``make train``, the Docker entrypoint) run ``python -m
pystock_training.store_check`` first: it exits 0 when the store in ``MLFLOW_TRACKING_URI`` is
usable (creating it, under an exclusive ``flock`` on the database file, when it is new), else 1
after one line naming the file and the problem. Any other URI (a tracking server) is left to
``pystock_training.preflight``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import stat
import struct
import sys
import time
from pathlib import Path
from urllib.parse import quote

import click

logger = logging.getLogger("pystock_training.store_check")  # not __main__ under python -m

DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow 3's store when MLFLOW_TRACKING_URI is unset
SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
# MLflow creates the tables in a few seconds; a holder past this is hung, not busy.
LOCK_TIMEOUT_S = 300.0


class StoreError(Exception):
    """The store cannot be used; the message names the file and what is wrong."""


def sqlite_path(uri: str) -> Path | None:
    """The database file a ``sqlite:`` URI names (relative to the working directory, as
    SQLAlchemy resolves it), or None for any other URI and for an in-memory database."""
    if not uri.startswith("sqlite:"):
        return None
    database = uri.removeprefix("sqlite:").removeprefix("//")
    database = database.removeprefix("/").split("?", 1)[0]
    if database in ("", ":memory:"):
        return None
    return Path(database).absolute()


def check_header(path: Path, header: bytes, size: int) -> None:
    """Refuse a file that is not an SQLite database, or is shorter than its header says.

    Raises:
        StoreError: Not a database, or truncated.
    """
    if not header.startswith(SQLITE_MAGIC):
        raise StoreError(f"{path} is not an SQLite database (corrupt, or another kind of file)")
    if size < HEADER_SIZE:
        raise StoreError(f"{path} is truncated ({size} bytes, less than an SQLite header)")
    (page_size,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    change_counter, page_count = struct.unpack(">II", header[24:32])
    (valid_for,) = struct.unpack(">I", header[92:96])
    # SQLite trusts the header's page count when it is stamped with the change counter, and
    # then reads the missing pages of a truncated file as a malformed database, mid-run.
    if valid_for == change_counter and page_count * page_size > size:
        raise StoreError(
            f"{path} is truncated ({size} of {page_count * page_size} bytes); restore it from a backup"
        )


def check_database(path: Path, fd: int) -> bool:
    """Check the file through SQLite itself; True when MLflow's tables are there.

    Raises:
        StoreError: Not a database, truncated, or SQLite cannot read its schema.
    """
    if not os.fstat(fd).st_size:
        return False  # SQLite takes an empty file for an empty database
    if os.pread(fd, len(SQLITE_MAGIC), 0) != SQLITE_MAGIC:
        raise StoreError(f"{path} is not an SQLite database (corrupt, or another kind of file)")
    try:
        # rw, not ro: a journal left by a crashed writer is rolled back on open, which needs it.
        database = f"file:{quote(str(path))}?mode=rw"
        connection = sqlite3.connect(database, uri=True, timeout=30, isolation_level=None)
        try:
            connection.execute("BEGIN")
            rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            names = {row[0] for row in rows}
            # Read under SQLite's shared lock: a run committing beside this check writes the
            # header's new page count before the pages that extend the file.
            check_header(path, os.pread(fd, HEADER_SIZE, 0), os.fstat(fd).st_size)
            # MLflow writes alembic_version as it migrates; with the experiments table it marks
            # a store MLflow has created.
            created = {"alembic_version", "experiments"} <= names
            if created:
                connection.execute("SELECT version_num FROM alembic_version").fetchall()
            connection.execute("ROLLBACK")
        finally:
            connection.close()
    except sqlite3.Error as exc:
        # SQLite says "malformed" for a truncated file too; the header tells the two apart.
        check_header(path, os.pread(fd, HEADER_SIZE, 0), os.fstat(fd).st_size)
        raise StoreError(f"{path} cannot be read as an SQLite database: {exc}") from exc
    return created


def check_folder(folder: Path) -> None:
    """Create the folder as MLflow would, and refuse one this user cannot write.

    SQLite writes its journal beside the database, so a read-only folder fails every write
    even when the file itself is writable.

    Raises:
        StoreError: The folder cannot be created or written.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the tracking store's folder {folder}: {exc.strerror}") from exc
    if not folder.is_dir():
        raise StoreError(f"the tracking store's folder {folder} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(
            f"the tracking store's folder {folder} is not writable by this user "
            "(SQLite writes its journal beside the database)"
        )


def open_locked(path: Path, timeout: float) -> int:
    """Open (or create) the database file and hold an exclusive flock on it.

    The lock is ``flock``, which is separate from the POSIX record locks SQLite takes on the same
    file, so it serialises only the store checks, never MLflow's own reads and writes.

    Raises:
        StoreError: The file cannot be opened for writing, or the lock is not free in time.
    """
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise StoreError(f"{path} is not a regular file")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot open {path} for writing: {exc.strerror}") from exc
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                message = f"{path} is still being created by another process after {timeout:.0f}s"
                raise StoreError(message) from None
            time.sleep(0.1)


def create_store(uri: str) -> None:
    """Let MLflow create its tables and default experiment, exactly as ``mlflow run`` would.

    Raises:
        StoreError: MLflow could not create them.
    """
    from mlflow import MlflowClient  # slow to import; needed only for a new store

    from pystock_training.errors import first_line

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # MLflow wraps SQLAlchemy, Alembic and OS errors alike
        raise StoreError(f"cannot create the tracking store {uri}: {first_line(exc)}") from exc


def ensure_sqlite_store(uri: str, timeout: float = LOCK_TIMEOUT_S) -> None:
    """Check the store ``uri`` names, and create it under a lock if it is new.

    Raises:
        StoreError: The store cannot be used; the message says why, naming the file.
    """
    path = sqlite_path(uri)
    if path is None:
        return
    check_folder(path.parent)
    fd = open_locked(path, timeout)
    try:
        # Checked under the lock: a process creating the store holds it until MLflow is done.
        if not check_database(path, fd):
            logger.info("creating the tracking store %s", path)
            create_store(uri)
    finally:
        os.close(fd)  # releases the flock


@click.command("store_check")
@click.option(
    "--timeout",
    type=float,
    default=LOCK_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for another process creating the same store.",
)
def main(timeout: float) -> None:
    """Exit 0 if the SQLite store in MLFLOW_TRACKING_URI is usable (created if new), 1 if not."""
    # The same format as pystock_training.cli.configure_logging, without importing the CLI
    # module, which imports mlflow (seconds on every cron tick).
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    try:
        ensure_sqlite_store(uri, timeout)
    except StoreError as exc:
        logger.error("tracking store unusable: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
