"""The project's declarations agree: MLproject, the step CLIs, config, conda.yaml and the lock."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from importlib import metadata

import click
import pytest
import yaml

from pystock_training import config
from pystock_training.provenance import SCORE_ONLY
from tests.conftest import PROJECT_ROOT

ENTRY_POINTS = ("main", "train_model", "evaluate_model", "register_model")


def mlproject() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())


def cli_command(entry_point: str) -> click.Command:
    return importlib.import_module(entry_point).main


def spec_default(spec: object) -> object:
    return spec.get("default") if isinstance(spec, dict) else None


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_every_parameter_has_one_name_and_one_default(entry_point: str) -> None:
    entry = mlproject()["entry_points"][entry_point]
    command = cli_command(entry_point)
    options = {param.name: param for param in command.params}
    assert set(entry["parameters"]) == set(options), "MLproject and the CLI take different parameters"
    for name, spec in entry["parameters"].items():
        # The MLproject command passes each parameter as the kebab-case flag of its own name.
        assert f"--{name.replace('_', '-')} {{{name}}}" in entry["command"]
        default = spec_default(spec)
        option = options[name]
        if default is None:
            assert option.required, f"{entry_point}.{name} has no default in MLproject but is optional"
            continue
        assert option.type.convert(str(default), option, None) == option.default, name
        if hasattr(config, name.upper()):
            assert option.default == getattr(config, name.upper()), f"{name} drifted from config"


def test_main_takes_every_training_parameter() -> None:
    # That main passes them on is checked end to end in test_pipeline_e2e.py. The driver
    # chooses predictions_file and data_digest (the digest its run key hashed) itself.
    entry_points = mlproject()["entry_points"]
    train_params = set(entry_points["train_model"]["parameters"]) - {"predictions_file", "data_digest"}
    assert train_params | {"model_name"} <= set(entry_points["main"]["parameters"])


def test_parameters_are_typed() -> None:
    for entry in mlproject()["entry_points"].values():
        for name, spec in entry["parameters"].items():
            kind = spec if isinstance(spec, str) else spec["type"]
            assert kind in {"string", "float"}, f"{name}: {kind} (path would leave RUNNING runs)"


def read_pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement, _, marker = line.partition(";")
        name, _, version = requirement.strip().partition("==")
        version = f"{version} ;{marker}" if marker else version
        assert version, f"not an exact pin: {line}"
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_conda_yaml_carries_the_lock_under_pip() -> None:
    conda = yaml.safe_load((PROJECT_ROOT / "conda.yaml").read_text())
    pip_sections = [dep["pip"] for dep in conda["dependencies"] if isinstance(dep, dict)]
    assert len(pip_sections) == 1
    conda_pins = read_pins("\n".join(pip_sections[0]))
    lock = read_pins((PROJECT_ROOT / "requirements.lock").read_text())
    assert conda_pins == lock
    # Nothing but python and pip outside pip:, so virtualenv and uv can convert it.
    plain = [dep for dep in conda["dependencies"] if isinstance(dep, str)]
    assert all(dep == "pip" or dep.startswith("python=") for dep in plain), plain


def test_direct_pins_are_in_the_lock_and_the_lock_is_installed() -> None:
    direct = read_pins((PROJECT_ROOT / "requirements.in").read_text())
    lock = read_pins((PROJECT_ROOT / "requirements.lock").read_text())
    for name, version in direct.items():
        assert lock.get(name) == version, name
    for name, version in lock.items():
        if ";" not in version:
            assert metadata.version(name) == version, f"{name} installed differs from the lock"


@pytest.mark.parametrize("script", ["main", "train_model", "evaluate_model", "register_model"])
def test_no_pipeline_step_imports_the_score_only_modules(script: str) -> None:
    # They are left out of the code fingerprint (provenance.SCORE_ONLY): a step that used them
    # could change the model without changing the run key.
    modules = [path.removesuffix(".py").replace("/", ".") for path in SCORE_ONLY]
    code = f"import sys, {script}; print(sorted(set(sys.modules) & {set(modules)!r}))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("script", "unneeded"),
    [
        # The driver only validates parameters and starts steps.
        ("main", {"xgboost", "sklearn", "matplotlib"}),
        # xgboost itself pulls in sklearn, so train_model can only leave out the plots.
        ("train_model", {"matplotlib"}),
        ("evaluate_model", {"xgboost"}),
        # The serving check loads xgboost through pyfunc when it runs, not at start.
        ("register_model", {"xgboost", "sklearn", "matplotlib"}),
    ],
)
def test_each_process_imports_only_what_its_step_needs(script: str, unneeded: set[str]) -> None:
    # Every step is its own process: each library it imports without using costs every
    # pipeline start-up time and memory (xgboost about 90 MB and 0.4 s, sklearn 60 MB).
    code = f"import sys, {script}; print(sorted({{m.split('.')[0] for m in sys.modules}} & {unneeded!r}))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
