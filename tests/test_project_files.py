"""The project's declarations agree: MLproject, the step CLIs, config, conda.yaml and the lock."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from dataclasses import asdict, fields
from importlib import metadata
from pathlib import Path

import click
import pytest
import yaml

from pystock_training import config
from pystock_training.params import (
    ENTRY_POINTS,
    PARAMETERS,
    REQUIRED,
    GateParams,
    PipelineParams,
    TrainParams,
    parameters,
)
from pystock_training.provenance import SCORE_ONLY
from tests.conftest import PROJECT_ROOT

# MLflow's parameter types have no int or bool: integers are floats, booleans strings.
MLFLOW_TYPES = {str: "string", float: "float", int: "float", bool: "string"}


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


def parse_default(text: object, kind: type) -> object:
    """A default as MLflow hands it to the command line, read as the declared type."""
    if kind is bool:
        return {"true": True, "false": False}[str(text).lower()]
    if kind is int:
        number = float(text)
        assert number.is_integer(), text
        return int(number)
    return kind(text)


def test_the_entry_points_are_the_declared_ones() -> None:
    assert set(mlproject()["entry_points"]) == set(ENTRY_POINTS)
    assert {entry for param in PARAMETERS for entry in param.entry_points} == set(ENTRY_POINTS)
    assert len({param.name for param in PARAMETERS}) == len(PARAMETERS), "a parameter declared twice"


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_mlproject_agrees_with_the_declaration(entry_point: str) -> None:
    entry = mlproject()["entry_points"][entry_point]
    declared = {param.name: param for param in parameters(entry_point)}
    assert set(entry["parameters"]) == set(declared), "MLproject and params.PARAMETERS differ"
    for name, spec in entry["parameters"].items():
        param = declared[name]
        kind = spec if isinstance(spec, str) else spec["type"]
        assert kind == MLFLOW_TYPES[param.type], f"{entry_point}.{name}: {kind} for a {param.type.__name__}"
        default = param.default_for(entry_point)
        if default is REQUIRED:
            assert spec_default(spec) is None, f"{entry_point}.{name} is required but has a default"
        else:
            assert spec_default(spec) is not None, f"{entry_point}.{name} has no default in MLproject"
            assert parse_default(spec["default"], param.type) == default, f"{entry_point}.{name}"
    # The script of the same name, with every parameter as the kebab-case flag of its name, once.
    command = entry["command"].split()
    assert command[:2] == ["python", f"{entry_point}.py"]
    passed = dict(zip(command[2::2], command[3::2], strict=True))
    assert passed == {f"--{name.replace('_', '-')}": f"{{{name}}}" for name in declared}


def test_the_parameter_classes_take_their_fields_from_the_declaration() -> None:
    for cls, entry_point in ((PipelineParams, "main"), (TrainParams, "train_model")):
        declared = {param.name: param.default_for(entry_point) for param in parameters(entry_point)}
        assert {field.name: field.default for field in fields(cls)} == declared, cls.__name__
    assert set(asdict(GateParams("roc_auc", 0.5, 0.01))) < {param.name for param in parameters("main")}


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


@pytest.mark.slow
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


@pytest.mark.slow
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


def package_imports() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports, at the top or inside functions."""
    package = PROJECT_ROOT / "pystock_training"
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.rsplit(".", node.level - (path.name == "__init__.py"))[0]
                    module = f"{base}.{node.module}" if node.module else base
                else:
                    module = node.module or ""
                targets.add(module)
                # `from package import module` imports that module.
                targets.update(f"{module}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph[module]):
            if cycle := visit(target):
                return cycle
        path.pop()
        done.add(module)
        return None

    return next((cycle for module in sorted(graph) if (cycle := visit(module))), None)


def test_the_import_checker_finds_a_lazy_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_package_module_imports_another_in_a_cycle() -> None:
    # Also the imports inside functions: a lazy import hides a cycle until its function runs,
    # and a module half-initialised at that moment fails with an ImportError far from the cause.
    graph = package_imports()
    # The graph sees both kinds: trigger imports cli only inside its main().
    assert "pystock_training.params" in graph["pystock_training.pipeline"]
    assert "pystock_training.cli" in graph["pystock_training.trigger"]
    assert find_cycle(graph) is None


def markdown_links(text: str) -> list[str]:
    """The targets of the ``[text](target)`` links outside code blocks and code spans."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def broken_links(page: Path) -> list[str]:
    """The relative links of a Markdown page whose file or heading does not exist."""
    broken = []
    for target in markdown_links(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{page.name}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text()):
            broken.append(f"{page.name}: {target} (no such heading)")
    return broken


def test_the_link_checker_finds_a_missing_file_and_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## The hand-off, in short\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[a](other.md#the-hand-off-in-short) [b](other.md#gone) [c](missing.md) `[d](nowhere.md)`\n"
        "[e](https://example.com/x.md) [f](#top)\n\n# Top\n"
    )
    assert broken_links(page) == [
        "page.md: other.md#gone (no such heading)",
        "page.md: missing.md (no such file)",
    ]


@pytest.mark.parametrize(
    "page",
    ["README.md", *sorted(p.relative_to(PROJECT_ROOT).as_posix() for p in PROJECT_ROOT.glob("docs/*.md"))],
)
def test_every_relative_link_in_the_docs_resolves(page: str) -> None:
    # Relative links and #anchors break silently when a page or a heading is renamed.
    assert broken_links(PROJECT_ROOT / page) == []


def _package_imports(tree: ast.Module) -> list[str]:
    """The pystock_training modules a script imports, in order."""
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names if alias.name.startswith("pystock_training")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pystock_training"):
            names.append(node.module or "")
    return names


@pytest.mark.parametrize("script", ["main", "train_model", "evaluate_model", "register_model", "score"])
def test_each_script_turns_collection_off_before_it_loads_the_package(script) -> None:
    imports = _package_imports(ast.parse((PROJECT_ROOT / f"{script}.py").read_text()))
    assert imports[0] == "pystock_training.startup", imports
    assert len(imports) > 1


@pytest.mark.slow
def test_run_cli_turns_collection_back_on_with_what_is_loaded_frozen() -> None:
    # In a process of its own: run_cli installs signal handlers.
    code = (
        "import gc, sys\n"
        "import pystock_training.startup\n"
        "from pystock_training.cli import run_cli\n"
        "assert not gc.isenabled()\n"
        "run_cli('probe', lambda: None)\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 100_000)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "True"]
