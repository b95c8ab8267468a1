"""Where a model came from: the data file's digest and the code version."""

from __future__ import annotations

import hashlib
import logging
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHUNK_BYTES = 1 << 20


def file_digest(path: str | Path) -> str:
    """sha256 of the file's bytes, read in chunks so a large file never sits in memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def code_version(root: Path = PROJECT_ROOT) -> str:
    """The git commit of ``root``, with ``+dirty`` when tracked files changed; ``unknown`` without git."""
    try:
        commit = _git(root, "rev-parse", "HEAD")
        # Untracked files (mlflow.db, outputs) do not change the code, so they do not count.
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        logger.warning("%s is not a git checkout; code version is unknown", root)
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


# What the model depends on: the entry points, the package and the pinned environment. Tests,
# docs and data are left out (the data enters the run key through its own digest).
SOURCE_PATTERNS = ("MLproject", "conda.yaml", "requirements.lock", "*.py", "pystock_training/**/*.py")


def source_digest(root: Path = PROJECT_ROOT) -> str:
    """sha256 over the paths and bytes of the source files, in a stable order."""
    digest = hashlib.sha256()
    paths = sorted({path for pattern in SOURCE_PATTERNS for path in root.glob(pattern) if path.is_file()})
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_fingerprint(root: Path = PROJECT_ROOT) -> str:
    """The code's identity for the run key: the commit when the tree is clean, else the sources' hash.

    A dirty tree or a copy without git has no commit that describes it, so the files themselves
    decide: an edit retrains, a checkout of the same code does not.
    """
    version = code_version(root)
    if version == "unknown" or version.endswith("+dirty"):
        return f"sources:{source_digest(root)}"
    return version


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True, timeout=30
    )
    return result.stdout.strip()
