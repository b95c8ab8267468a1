"""Inputs tried the hard way: a FIFO or a device as data, NaN and inf parameters, the
reaper's floor, unreadable files, model names the registry or a models:/ URI cannot take,
integral floats for integer parameters, trailing commas and lines without line breaks.

Each fails in one line naming the file or parameter, before any step starts. The subprocess tests
guard with a timeout, so a hang (what a FIFO did) fails instead of stalling the suite.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.utils.models import _parse_model_uri
from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_ENTRY_POINT
from mlflow.utils.validation import _validate_model_name

from pystock_training import config
from pystock_training.data import load_dataset
from pystock_training.digest import file_digest
from pystock_training.errors import DataError, PystockError
from pystock_training.params import (
    ENTRY_POINTS,
    PARAMETERS,
    Bounds,
    GateParams,
    PipelineParams,
    check_params,
    check_register_params,
    parameters,
)
from pystock_training.pipeline import run_pipeline
from pystock_training.steps.train_model import train_model
from pystock_training.trigger import MIN_REAP_AGE_HOURS, reap_orphans
from tests.conftest import PROJECT_ROOT, process_group, signal_frame, subprocess_env

# Parameters MLproject declares as floats (it has no integer type) that the CLIs parse as integers.
INTEGER_PARAMETERS = {param.name for param in PARAMETERS if param.type is int}
FLOAT_PARAMETERS = sorted(param.name for param in PARAMETERS if param.type is float)
# Generous: a step's imports take seconds; a FIFO opened blocking would wait for ever.
HANG_TIMEOUT = 120
DROP_DAC = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


def run_guarded(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run a command in its own process group; a hang is a test failure, not a stalled suite."""
    with process_group(command, cwd, env) as process:
        try:
            output = process.communicate(timeout=HANG_TIMEOUT)[0]
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{' '.join(command)} still ran after {HANG_TIMEOUT}s (a hang)") from None
    return process.returncode, output


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR " in line]


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "data.csv"
    os.mkfifo(path)
    return path


# --- FIFO and devices as data_file ------------------------------------------------------------


@pytest.mark.parametrize(
    ("special", "kind"),
    [("fifo", "is a named pipe (FIFO)"), ("/dev/zero", "is a character device")],
)
def test_the_loader_refuses_a_fifo_or_a_device_by_its_kind(fifo: Path, special: str, kind: str) -> None:
    path = fifo if special == "fifo" else Path(special)
    with pytest.raises(DataError, match=rf"^{path}: {re.escape(kind)}, expected a regular CSV"):
        load_dataset(path)
    # The run key's hash refuses it too, instead of blocking on the FIFO or reading /dev/zero for ever.
    with pytest.raises(DataError, match=re.escape(kind)):
        file_digest(path)


@pytest.mark.slow
@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_main_refuses_a_fifo_or_a_device_in_one_line_before_any_step(
    tmp_path: Path, tracking_uri: str, fifo: Path, special: str
) -> None:
    path = fifo if special == "fifo" else Path(special)
    command = [sys.executable, str(PROJECT_ROOT / "main.py"), "--data-file", str(path)]
    code, output = run_guarded(command, tmp_path, subprocess_env(tracking_uri))
    assert code == 1, output[-2000:]
    assert "Traceback" not in output
    kind = "is a named pipe (FIFO)" if special == "fifo" else "is a character device"
    (line,) = error_lines(output)
    assert line.endswith(f"main failed: {path}: {kind}, expected a regular CSV or Parquet file"), line
    (run,) = MlflowClient().search_runs(["0"])  # the driver's own, no step
    assert run.info.status == "FAILED"


@pytest.mark.slow
def test_the_trigger_gives_a_fifo_the_same_line_as_main(
    tmp_path: Path, tracking_uri: str, fifo: Path
) -> None:
    command = [sys.executable, "-m", "pystock_training.trigger", "--data-file", str(fifo)]
    env = subprocess_env(tracking_uri) | {"PYTHONPATH": str(PROJECT_ROOT)}
    code, output = run_guarded(command, tmp_path, env)
    assert code == 1, output
    (line,) = error_lines(output)
    assert line.endswith(f"{fifo}: is a named pipe (FIFO), expected a regular CSV or Parquet file")


# --- unreadable data file ---------------------------------------------------------------------


@pytest.fixture
def unreadable(tmp_path: Path) -> Path:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE: as root every file is readable")
    path = tmp_path / "secret.csv"
    signal_frame(300).to_csv(path, header=False, index=False)
    path.chmod(0)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["main", "trigger"])
def test_an_unreadable_data_file_gets_the_loaders_line_not_a_traceback(
    tmp_path: Path, tracking_uri: str, unreadable: Path, entry: str
) -> None:
    script = [str(PROJECT_ROOT / "main.py")] if entry == "main" else ["-m", "pystock_training.trigger"]
    command = [*DROP_DAC, sys.executable, *script, "--data-file", str(unreadable)]
    env = subprocess_env(tracking_uri) | {"PYTHONPATH": str(PROJECT_ROOT)}
    code, output = run_guarded(command, tmp_path, env)
    assert code == 1, output[-2000:]
    assert "Traceback" not in output
    (line,) = error_lines(output)
    assert line.endswith(f"{unreadable}: cannot be read (Permission denied)"), line


# --- float parameters: finite and in range, one place ------------------------------------------


def test_every_float_parameter_of_every_entry_point_has_its_range_in_one_place() -> None:
    entry_points = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())["entry_points"]
    floats = {
        name
        for entry in entry_points.values()
        for name, spec in entry["parameters"].items()
        if isinstance(spec, dict) and spec.get("type") == "float"
    }
    assert floats - INTEGER_PARAMETERS == set(FLOAT_PARAMETERS)
    assert all(isinstance(param.limits, Bounds) for param in PARAMETERS if param.type is float)


@pytest.mark.parametrize("name", FLOAT_PARAMETERS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_refused_for_every_float_parameter(name: str, value: float) -> None:
    with pytest.raises(PystockError, match=rf"^invalid parameters: {name} must be .*, got {value}$"):
        check_params({name: value})


@pytest.mark.slow
def test_main_refuses_reap_after_hours_nan_before_anything_else(tmp_path: Path, tracking_uri: str) -> None:
    # The data file is missing too: the parameter is what must be named first.
    params = PipelineParams(data_file=str(tmp_path / "missing.csv"), reap_after_hours=math.nan)
    with pytest.raises(
        PystockError, match=r"^invalid parameters: reap_after_hours must be a finite number >= 0, got nan$"
    ):
        run_pipeline(params)
    (run,) = MlflowClient().search_runs(["0"])
    assert run.info.status == "FAILED"


@pytest.mark.slow
@pytest.mark.parametrize("max_age_hours", [math.nan, 0.0, -5.0, 1e-9])
def test_the_reaper_never_touches_a_run_younger_than_its_floor(
    tracking_uri: str, max_age_hours: float
) -> None:
    client = MlflowClient()
    now_ms = time.time() * 1000
    young = client.create_run(
        "0",
        start_time=int(now_ms - 0.5 * MIN_REAP_AGE_HOURS * 3_600_000),
        tags={MLFLOW_PROJECT_ENTRY_POINT: "train_model"},
    )
    old = client.create_run(
        "0",
        start_time=int(now_ms - 2 * MIN_REAP_AGE_HOURS * 3_600_000),
        tags={MLFLOW_PROJECT_ENTRY_POINT: "main"},
    )
    assert reap_orphans("0", max_age_hours) == [old.info.run_id]
    assert client.get_run(young.info.run_id).info.status == "RUNNING"
    assert client.get_run(old.info.run_id).info.status == "FAILED"


@pytest.mark.slow
def test_an_infinite_age_reaps_nothing(tracking_uri: str) -> None:
    client = MlflowClient()
    ancient = client.create_run("0", start_time=0, tags={MLFLOW_PROJECT_ENTRY_POINT: "main"})
    assert reap_orphans("0", math.inf) == []
    assert client.get_run(ancient.info.run_id).info.status == "RUNNING"


# --- integer parameters take integral floats -------------------------------------------------


@pytest.mark.parametrize(
    ("entry_point", "name"),
    [(entry, param.name) for entry in ENTRY_POINTS for param in parameters(entry) if param.type is int],
)
@pytest.mark.parametrize(("text", "expected"), [("1e9", 10**9), ("300.0", 300), ("7", 7), (" 12 ", 12)])
def test_integer_parameters_take_integral_floats(
    entry_point: str, name: str, text: str, expected: int
) -> None:
    command = importlib.import_module(entry_point).main
    context = command.make_context(entry_point, [f"--{name.replace('_', '-')}", text])
    assert context.params[name] == expected
    assert type(context.params[name]) is int


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2.5", "2.5 is not a whole number"),
        ("nan", "nan is not a whole number"),
        ("1e400", "1e400 is not a whole number"),
        ("ten", "'ten' is not a number"),
    ],
)
def test_integer_parameters_refuse_fractions_in_one_line(text: str, message: str) -> None:
    command = importlib.import_module("main").main
    with pytest.raises(click.BadParameter) as raised:
        command.make_context("main", ["--num-boost-round", text])
    assert raised.value.format_message() == f"Invalid value for '--num-boost-round': {message}"


# --- model names, checked up front ------------------------------------------------------------

GATE = GateParams(config.GATE_METRIC, config.MIN_SCORE, config.MAX_REGRESSION)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("team/model", r"model_name 'team/model' contains '/'"),
        ("x@champion", r"model_name 'x@champion' contains '@'"),
        ("a:b", r"contains ':'"),
        ("what?", r"contains '\?'"),
        ("a#b", r"contains '#'"),
        ("  ", r"model_name must not be empty"),
        (" padded", r"leading or trailing spaces"),
        ("..up", r"cannot be '\.' or start with '\.\.'"),
        ("x" * 202, r"at most 201"),
    ],
)
def test_model_names_the_registry_or_a_models_uri_rejects_are_refused(name: str, message: str) -> None:
    with pytest.raises(PystockError, match=rf"^invalid parameters: .*{message}") as raised:
        check_register_params(name, GATE)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("name", [config.MODEL_NAME, "Team Model v2", "model.v1", "m_1-2", "x" * 201])
def test_accepted_model_names_round_trip_through_the_registry_and_models_uris(name: str) -> None:
    check_register_params(name, GATE)
    _validate_model_name(name)
    assert _parse_model_uri(f"models:/{name}@{config.ALIAS_CHAMPION}").name == name
    assert _parse_model_uri(f"models:/{name}/1").name == name


@pytest.mark.parametrize("name", ["team/model", "x@champion", "a:b"])
def test_refused_names_are_the_ones_mlflow_cannot_take(name: str) -> None:
    # The cross-check: MLflow's registry refuses each name, or a models:/ URI reads it back changed
    # ("models:/x@champion" is model x's alias champion, not the latest version of x@champion).
    try:
        _validate_model_name(name)
    except MlflowException:
        return
    uris = [f"models:/{name}", f"models:/{name}@{config.ALIAS_CHAMPION}", f"models:/{name}/1"]
    assert any(_parse_model_uri(uri).name != name for uri in uris)


@pytest.mark.slow
def test_main_refuses_a_bad_model_name_before_anything_else(tmp_path: Path, tracking_uri: str) -> None:
    params = PipelineParams(data_file=str(tmp_path / "missing.csv"), model_name="team/model")
    with pytest.raises(PystockError, match=r"^invalid parameters: model_name 'team/model' contains '/'"):
        run_pipeline(params)


# --- misleading data messages ------------------------------------------------------------------


def rows_text(n_rows: int = 300, end: str = "\n") -> str:
    rows = signal_frame(n_rows).to_numpy()
    return "".join(",".join(map(str, row)) + end for row in rows)


@pytest.mark.parametrize("header", ["", ",".join(f"c{i}" for i in range(15)) + ",\n"])
def test_a_trailing_comma_on_every_line_is_named(tmp_path: Path, header: str) -> None:
    path = tmp_path / "trailing.csv"
    path.write_text(header + rows_text(end=",\n"))
    with pytest.raises(
        DataError,
        match=r"the last column is empty on every line \(does each line end with a trailing comma\?\)",
    ):
        load_dataset(path)


def test_one_missing_label_is_still_reported_by_its_line(tmp_path: Path) -> None:
    lines = rows_text().splitlines()
    lines[4] = lines[4].rsplit(",", 1)[0] + ","
    path = tmp_path / "one_missing.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"missing label at line 5$"):
        load_dataset(path)


@pytest.mark.slow
@pytest.mark.parametrize("before", [0, 100])
def test_a_line_longer_than_the_readers_block_is_named(tmp_path: Path, before: int) -> None:
    path = tmp_path / "one_line.csv"
    cells = np.random.default_rng(0).integers(0, 2, size=5_000_000)
    path.write_text(rows_text(before) + ",".join(map(str, cells)) + "\n" + rows_text(100))
    with pytest.raises(
        DataError,
        match=rf"^{path}: line {before + 1} is 10\.0 MB without a line break, longer than the CSV reader's"
        r" 1\.0 MB block",
    ):
        load_dataset(path)


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("entry_point", ["main", "train_model"])
def test_mlflow_run_with_a_fifo_fails_in_one_line_and_leaves_nothing_running(
    tmp_path: Path, tracking_uri: str, fifo: Path, entry_point: str
) -> None:
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(PROJECT_ROOT),
        "--env-manager",
        "local",
        "-e",
        entry_point,
        "-P",
        f"data_file={fifo}",
    ]
    code, output = run_guarded(command, tmp_path, subprocess_env(tracking_uri))
    assert code != 0
    assert "Traceback" not in output
    assert any(
        line.endswith(
            f"{entry_point} failed: {fifo}: is a named pipe (FIFO), expected a regular CSV or Parquet file"
        )
        for line in error_lines(output)
    ), output[-3000:]
    runs = MlflowClient().search_runs(["0"])
    assert [run.info.status for run in runs] == ["FAILED"]
    assert MlflowClient().search_model_versions() == []


@pytest.mark.slow
def test_train_model_on_its_own_refuses_a_bad_model_name_before_training(
    tmp_path: Path, tracking_uri: str
) -> None:
    data = tmp_path / "data.csv"
    data.write_text(rows_text())
    with pytest.raises(PystockError, match=r"^invalid parameters: model_name 'x@champion' contains '@'"):
        train_model(data_file=data, model_name="x@champion", num_boost_round=5)
    (run,) = MlflowClient().search_runs(["0"])
    assert run.info.status == "FAILED"
    assert "fit_rows" not in run.data.metrics  # nothing was trained


def test_the_longest_model_name_leaves_room_for_the_promotion_locks_names() -> None:
    # PostgreSQL enforces registered_models.name VARCHAR(256); SQLite would not show an overflow.
    from pystock_training.lock import lock_name
    from pystock_training.params import MODEL_NAME_MAX_LENGTH, REGISTRY_NAME_MAX_LENGTH

    tombstone = f"{lock_name('x' * MODEL_NAME_MAX_LENGTH)}.broken.{uuid.uuid4().hex}"
    assert len(tombstone) == REGISTRY_NAME_MAX_LENGTH


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_depth", 10**10, r"max_depth must be in \[1, 30\], got 10000000000"),
        ("num_boost_round", 10**10, r"num_boost_round must be in \[1, 1000000000\], got 10000000000"),
        ("early_stopping_rounds", 10**10, r"early_stopping_rounds must be 0 \(off\) to 1000000000"),
    ],
)
def test_integer_parameters_have_an_upper_limit(field: str, value: int, message: str) -> None:
    with pytest.raises(PystockError, match=message):
        check_params({field: value})
