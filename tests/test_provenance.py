"""The code fingerprint: exactly the files that can change the model, as they are on disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pystock_training.provenance import code_fingerprint, code_version
from tests.conftest import PROJECT_ROOT

Change = Callable[[Path], None]

# Git state that is not the user's (hooks, signing, a global excludes file) must not leak in.
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(root: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(root), *args], check=True, capture_output=True, text=True, env=os.environ | GIT_ENV
    )
    return result.stdout.strip()


def commit_all(root: Path, message: str) -> None:
    git(root, "add", "-A")
    # --allow-empty: a commit happens even when the change is ignored by git, so HEAD always moves.
    git(root, "commit", "-q", "--allow-empty", "-m", message)


def copy_project(target: Path) -> Path:
    """The real project's files (README, tests and all) in ``target``, without git or local state."""
    shutil.copytree(
        PROJECT_ROOT,
        target,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "*.db", "__pycache__", "mlruns", "mlartifacts", "outputs", ".*_cache"
        ),
    )
    return target


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project in a fresh git repository with everything committed."""
    root = copy_project(tmp_path / "project")
    git(root, "init", "-q")
    commit_all(root, "initial")
    assert not code_version(root).endswith("+dirty")
    return root


def append(relative: str, text: str = "\n# edited\n") -> Change:
    def change(root: Path) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(text)

    return change


def write(relative: str, text: str) -> Change:
    def change(root: Path) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return change


def compile_package(root: Path) -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "pystock_training")], check=True)
    assert list((root / "pystock_training").glob("**/__pycache__/*.pyc"))


def rename_module(root: Path) -> None:
    (root / "pystock_training" / "report.py").rename(root / "pystock_training" / "summary.py")


IRRELEVANT = {
    "README edit": append("README.md", "\nMore docs.\n"),
    "data README edit": append("data/README.md", "\nMore docs.\n"),
    "new file under docs/": write("docs/design.md", "# Design\n"),
    "new Python file under docs/": write("docs/example.py", "x = 1\n"),
    "test edit": append("tests/test_trigger.py"),
    "new test": write("tests/test_new.py", "def test_nothing() -> None:\n    pass\n"),
    "benchmark edit": append("benchmarks/scale.py"),
    "scripts/ edit": append("scripts/make_dataset.py"),
    "data edit": append("data/training/data.csv", "0,0,0,0,0,0,0,0,0,0,0,0,0,0,1\n"),
    "other top-level .py": write("scratch.py", "print('hello')\n"),
    "pyproject.toml edit": append("pyproject.toml", "\n# edited\n"),
    "bytecode": compile_package,
}

RELEVANT = {
    "package module": append("pystock_training/model.py"),
    "package subpackage module": append("pystock_training/steps/train_model.py"),
    "data subpackage module": append("pystock_training/data/sniff.py"),
    "renamed module": rename_module,
    "main.py": append("main.py"),
    "train_model.py": append("train_model.py"),
    "evaluate_model.py": append("evaluate_model.py"),
    "register_model.py": append("register_model.py"),
    "MLproject": append("MLproject"),
    "requirements.lock": append("requirements.lock", "\nsix==1.17.0\n"),
    "conda.yaml": append("conda.yaml"),
}


@pytest.mark.parametrize("change", IRRELEVANT.values(), ids=IRRELEVANT.keys())
def test_what_cannot_change_the_model_leaves_it_alone_committed_or_not(project: Path, change: Change) -> None:
    before = code_fingerprint(project)
    change(project)
    assert code_fingerprint(project) == before
    commit_all(project, "not the model")
    assert code_fingerprint(project) == before


@pytest.mark.parametrize("change", RELEVANT.values(), ids=RELEVANT.keys())
def test_what_can_change_the_model_changes_it_committed_or_not(project: Path, change: Change) -> None:
    before = code_fingerprint(project)
    change(project)
    edited = code_fingerprint(project)
    assert edited != before
    # Committing the edit is not another change of the code.
    commit_all(project, "model change")
    assert code_fingerprint(project) == edited


def test_reverting_an_edit_restores_it(project: Path) -> None:
    module = project / "pystock_training" / "model.py"
    original = module.read_bytes()
    before = code_fingerprint(project)
    module.write_bytes(original + b"\n# edited\n")
    commit_all(project, "edit")
    module.write_bytes(original)  # uncommitted: the tree is dirty against the edit's commit
    assert code_fingerprint(project) == before


@pytest.mark.parametrize("relative", ["pystock_training/new_module.py", "pystock_training/steps/new_step.py"])
def test_an_untracked_new_module_changes_it(project: Path, relative: str) -> None:
    before = code_fingerprint(project)
    (project / relative).write_text("VALUE = 1\n")
    assert relative in git(project, "status", "--porcelain")  # untracked, not committed
    assert code_fingerprint(project) != before


def test_a_copy_without_git_matches_the_checkout(project: Path, tmp_path: Path) -> None:
    # A Docker image or an unpacked archive of the same code must get the same run key.
    bare = shutil.copytree(project, tmp_path / "bare", ignore=shutil.ignore_patterns(".git"))
    assert code_version(bare) == "unknown"
    assert code_fingerprint(bare) == code_fingerprint(project)


def test_code_version_is_still_the_commit(project: Path) -> None:
    head = git(project, "rev-parse", "HEAD")
    assert code_version(project) == head
    append("README.md")(project)
    assert code_version(project) == f"{head}+dirty"
