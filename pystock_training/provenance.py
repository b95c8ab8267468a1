"""Where a model came from: the code version, and the fingerprint of the code that makes it.

The data file's digest is taken while the file is parsed (pystock_training/digest.py).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from pathlib import Path

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


# Exactly what can change the model: the package, the step scripts `mlflow run` executes, the
# entry points and the pinned environment (conda.yaml is generated from the lock and is the env
# under --env-manager conda/virtualenv). Step scripts are named, not globbed, so a helper script
# at the top level does not retrain. Docs, tests, benchmarks and scripts/ stay out; the data enters
# the run key through its own digest.
SOURCE_PATTERNS = (
    "MLproject",
    "conda.yaml",
    "requirements.lock",
    "main.py",
    "train_model.py",
    "evaluate_model.py",
    "register_model.py",
    "pystock_training/**/*.py",
)
# The package's modules that only the score entry point runs: editing the scorer retrains nothing.
# tests/test_project_files.py checks that no pipeline step imports them.
SCORE_ONLY = ("pystock_training/steps/score.py", "pystock_training/batches.py")


def source_digest(root: Path = PROJECT_ROOT) -> str:
    """sha256 over the relative paths and bytes of the files ``SOURCE_PATTERNS`` name, in a stable order."""
    digest = hashlib.sha256()
    paths = sorted(
        {
            path
            for pattern in SOURCE_PATTERNS
            for path in root.glob(pattern)
            if path.is_file()
            and "__pycache__" not in path.relative_to(root).parts
            and path.relative_to(root).as_posix() not in SCORE_ONLY
        }
    )
    for path in paths:
        data = path.read_bytes()
        # Length-prefixed, so no split of bytes between a path and its content hashes alike.
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def code_fingerprint(root: Path = PROJECT_ROOT) -> str:
    """The code's identity for the run key: the hash of the model-changing sources as they are on disk.

    Git state plays no part: a docs-only commit must not retrain, an untracked new module must, and
    a checkout or an image without ``.git`` of the same code must get the same key.
    """
    return f"sources:{source_digest(root)}"


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True, timeout=30
    )
    return result.stdout.strip()
