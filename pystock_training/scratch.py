"""Scratch space for the predictions hand-off, and running out of it.

Each pipeline run (and each ``train_model`` run not told where to write) gets a folder of its
own from ``tempfile.mkdtemp``: created 0700 under a random name that must not exist yet, so no
other account can read it, replace a file in it, or create it first. A fixed shared name such as
``$TMPDIR/pystock-training`` would belong to whichever account made it first, and every other
account's run would fail writing into it (or read what its owner put there).
"""

from __future__ import annotations

import errno
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pystock_training import config
from pystock_training.errors import PystockError

logger = logging.getLogger(__name__)

SCRATCH_PREFIX = "pystock-"
# What each errno means when a write stops short; all three end a run the same way.
OUT_OF_SPACE = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "no space left (disk quota exceeded)",
    errno.EFBIG: "no space left for a file that large (file size limit)",
}
# dmlc's file stream reports a short fwrite with this and no errno.
_XGBOOST_SHORT_WRITE = "FileStream.Write incomplete"
_FIX = "free space there or set TMPDIR to a larger filesystem"


def make_scratch_dir() -> Path:
    """A new folder only this user can enter, under ``$TMPDIR``; the caller removes it.

    Raises:
        PystockError: The folder cannot be created (``$TMPDIR`` missing, read-only or full).
    """
    try:
        path = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
    except OSError as exc:
        raise PystockError(
            f"{tempfile.gettempdir()}: cannot create a scratch folder ({exc.strerror}); set TMPDIR "
            "to a folder you can write"
        ) from exc
    # mkdtemp asks for 0700 but the umask may take more away; the owner needs all three.
    path.chmod(0o700)
    return path


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A private scratch folder for the block, removed with its content on every way out.

    Success, an error, KeyboardInterrupt and the ``Terminated`` a SIGTERM raises all pass the
    ``finally``; only SIGKILL (or a power cut) leaves the folder behind.
    """
    path = make_scratch_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        logger.debug("removed scratch folder %s", path)


@contextmanager
def predictions_path(given: str | Path | None) -> Iterator[Path]:
    """``given``, or a file in a new private scratch folder that is removed if the block fails.

    On success the scratch file stays: a standalone ``train_model`` hands it to a later
    ``evaluate_model`` (its path is the train run's ``pystock.predictions_file`` tag).
    """
    if given:
        yield Path(given)
        return
    folder = make_scratch_dir()
    try:
        yield folder / config.PREDICTIONS_FILE_NAME
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def out_of_space(exc: BaseException) -> str | None:
    """One line naming the path and saying no space was left, if that is what ``exc`` comes from.

    Follows the chain of causes: MLflow and XGBoost wrap the ``OSError`` in errors of their own
    whose message no longer says "disk full".
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in OUT_OF_SPACE:
            # For a copy, filename2 is the destination: the file that could not be written.
            path = current.filename2 or current.filename or tempfile.gettempdir()
            return f"{path}: {OUT_OF_SPACE[current.errno]}; {_FIX}"
        if type(current).__name__ == "XGBoostError" and _XGBOOST_SHORT_WRITE in str(current):
            # MLflow stages a model in a temp folder before logging it, and XGBoost's message
            # names neither the file nor the cause: the folder is under TMPDIR.
            return (
                f"{tempfile.gettempdir()}: no space left on device (or a quota or file size limit) "
                f"while XGBoost saved the model there; {_FIX}"
            )
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def out_of_space_reported() -> Iterator[None]:
    """Turn running out of space anywhere in the block into one PystockError line."""
    try:
        yield
    except PystockError:
        raise
    except Exception as exc:
        reason = out_of_space(exc)
        if reason is None:
            raise
        raise PystockError(reason) from exc
