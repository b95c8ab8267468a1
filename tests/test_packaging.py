"""The package installs with pip, on its own, and imports from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def test_pip_builds_with_the_declared_backend_whose_requirements_are_installed() -> None:
    # Without [build-system] pip falls back to setuptools' legacy backend and installs anyway, so
    # the install test alone would not notice the table was gone.
    build_system = PYPROJECT["build-system"]
    assert build_system["build-backend"] == "setuptools.build_meta"
    # The tests build with --no-build-isolation (no network): the venv must satisfy the requirements.
    for requirement in map(Requirement, build_system["requires"]):
        assert requirement.specifier.contains(metadata.version(requirement.name)), requirement


def test_the_distribution_declares_the_direct_pins_of_requirements_in() -> None:
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.in"]}


def pip_install(source: Path, *args: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            *args,
        ],
        cwd=source,
        env=os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        check=True,
        capture_output=True,
    )


def import_from(cwd: Path, site_dir: Path) -> str:
    """Import the package and its subpackages in a fresh interpreter; return where it came from."""
    # addsitedir, not PYTHONPATH: an editable install is a .pth file, read only in site directories.
    code = (
        "import site, sys\n"
        f"site.addsitedir({str(site_dir)!r})\n"
        "import pystock_training, pystock_training.data.sniff, pystock_training.steps\n"
        "print(pystock_training.__file__)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        # -P: the working directory does not go on sys.path, so only the install can be found.
        [sys.executable, "-P", "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of the project to build from: setuptools writes build/ and egg-info into its source."""
    return Path(
        shutil.copytree(
            PROJECT_ROOT,
            tmp_path / "project",
            ignore=shutil.ignore_patterns(
                ".git", ".venv", "*.db", "__pycache__", "mlruns", "mlartifacts", "outputs", ".*_cache"
            ),
        )
    )


@pytest.mark.slow
def test_a_wheel_install_holds_only_the_package_and_imports_anywhere(source: Path, tmp_path: Path) -> None:
    site_dir = tmp_path / "site"
    pip_install(source, "--target", str(site_dir), ".")
    (tmp_path / "elsewhere").mkdir()
    imported = Path(import_from(tmp_path / "elsewhere", site_dir))
    assert imported == site_dir / "pystock_training" / "__init__.py"
    # Tests, benchmarks, scripts, the shipped data and the step scripts are not modules to install.
    installed = {path.name for path in site_dir.iterdir()}
    assert installed == {"pystock_training", "pystock_training-0.1.0.dist-info"}, installed
    (dist,) = metadata.distributions(path=[str(site_dir)])
    pins = [
        line for line in (PROJECT_ROOT / "requirements.in").read_text().splitlines() if line[:1].isalpha()
    ]
    assert sorted(dist.requires or []) == sorted(pins)


@pytest.mark.slow
def test_an_editable_install_imports_the_source_tree_from_anywhere(source: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    pip_install(source, "--prefix", str(prefix), "--editable", ".")
    (site_dir,) = prefix.glob("lib/python3.*/site-packages")
    (tmp_path / "elsewhere").mkdir()
    imported = Path(import_from(tmp_path / "elsewhere", site_dir))
    assert imported == source / "pystock_training" / "__init__.py"
