"""The champion's input contract: every shape a client sends, in-process and over HTTP."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import xgboost as xgb
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from pystock_training import config, serving
from pystock_training.errors import PystockError
from pystock_training.model import log_model
from pystock_training.steps.register_model import serving_check
from tests.conftest import PROJECT_ROOT, poll_until, signal_frame, subprocess_env
from tests.servers import free_port

FEATURES = [f"f{i}" for i in range(14)]


def fitted_booster() -> xgb.Booster:
    frame = signal_frame(400)
    features = frame.iloc[:, :-1].astype(np.int8)
    features.columns = FEATURES
    dtrain = xgb.QuantileDMatrix(features, label=frame.iloc[:, -1])
    return xgb.train({"objective": "binary:logistic", "max_depth": 3}, dtrain, num_boost_round=20)


def register(uri: str, folder: Path) -> tuple[xgb.Booster, str]:
    """Log and register a model in the store at ``uri``; the booster and the champion's URI.

    Run from ``folder``: a new store puts its artifacts under ./mlruns of its creator.
    """
    booster = fitted_booster()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(folder)
        with mlflow.start_run():
            example = pd.DataFrame(np.zeros((3, 14)), columns=FEATURES)
            info = log_model(booster, config.MODEL_ARTIFACT_NAME, example)
        version = mlflow.register_model(info.model_uri, config.MODEL_NAME)
        mlflow.MlflowClient().set_registered_model_alias(
            config.MODEL_NAME, config.ALIAS_CHAMPION, version.version
        )
    return booster, f"models:/{config.MODEL_NAME}@{config.ALIAS_CHAMPION}"


ROWS = signal_frame(6, seed=5).iloc[:, :-1].to_numpy()
MISSING = ROWS.astype(np.float64)
MISSING[4, 2] = np.nan


def headerless_csv() -> pd.DataFrame:
    # What the existing batch scorer does: int64 columns named 0..13.
    return pd.read_csv(io.StringIO(pd.DataFrame(ROWS).to_csv(header=False, index=False)), header=None)


ACCEPTED = {
    "named float64": lambda: pd.DataFrame(ROWS.astype(np.float64), columns=FEATURES),
    "named, columns shuffled": lambda: pd.DataFrame(ROWS, columns=FEATURES)[FEATURES[::-1]],
    "read_csv(header=None)": headerless_csv,
    "string column names": lambda: pd.DataFrame(ROWS, columns=[str(i) for i in range(14)]),
    "other column names": lambda: pd.DataFrame(ROWS, columns=[f"day_{i}" for i in range(14)]),
    "int8 frame": lambda: pd.DataFrame(ROWS.astype(np.int8), columns=FEATURES),
    "bool frame": lambda: pd.DataFrame(ROWS.astype(bool)),
    "nullable Int64 frame": lambda: pd.DataFrame(ROWS).astype("Int64"),
    "numpy int64": lambda: ROWS.astype(np.int64),
    "numpy float32": lambda: ROWS.astype(np.float32),
    "numpy uint8": lambda: ROWS.astype(np.uint8),
    "list of rows": lambda: ROWS.tolist(),
    "list of records": lambda: pd.DataFrame(ROWS, columns=FEATURES).to_dict("records"),
    "dict of columns": lambda: pd.DataFrame(ROWS, columns=FEATURES).to_dict("list"),
}


@pytest.fixture
def champion(tracking_uri: str) -> tuple[xgb.Booster, mlflow.pyfunc.PyFuncModel]:
    booster, uri = register(tracking_uri, Path.cwd())
    return booster, mlflow.pyfunc.load_model(uri)


@pytest.mark.slow
@pytest.mark.parametrize("shape", list(ACCEPTED))
def test_every_client_shape_gets_one_probability_per_row(champion, shape: str) -> None:
    booster, model = champion
    expected = booster.inplace_predict(pd.DataFrame(ROWS.astype(np.float32), columns=FEATURES))
    predicted = np.asarray(model.predict(ACCEPTED[shape]()))
    assert predicted.dtype == np.float64
    np.testing.assert_allclose(predicted, expected, rtol=1e-6)


@pytest.mark.slow
def test_nan_and_null_mean_missing_as_in_training(champion) -> None:
    booster, model = champion
    expected = booster.inplace_predict(pd.DataFrame(MISSING.astype(np.float32), columns=FEATURES))
    with_none = [[None if np.isnan(value) else value for value in row] for row in MISSING.tolist()]
    with_na = pd.DataFrame(with_none, dtype=object).fillna(pd.NA)
    for data in (MISSING, pd.DataFrame(MISSING), with_none, with_na, pd.DataFrame(MISSING).astype("Float64")):
        np.testing.assert_allclose(model.predict(data), expected, rtol=1e-6)
    # A missing value is not a zero: the booster tells them apart.
    assert not np.allclose(model.predict(MISSING)[4], model.predict(np.nan_to_num(MISSING))[4])


@pytest.mark.slow
def test_no_rows_give_no_predictions(champion) -> None:
    _, model = champion
    assert model.predict(pd.DataFrame(columns=FEATURES)).shape == (0,)


REJECTED = {
    "15 columns": (
        lambda: pd.DataFrame(np.zeros((2, 15))),
        r"expected 14 feature columns \(f0..f13 or positional\), got 15",
    ),
    "13 columns": (
        lambda: np.zeros((2, 13)),
        r"expected 14 feature columns \(f0..f13 or positional\), got 13",
    ),
    "named plus a label": (
        lambda: pd.DataFrame(np.zeros((2, 15)), columns=[*FEATURES, "y"]),
        "got 15",
    ),
    "some names": (
        lambda: pd.DataFrame(np.zeros((2, 14)), columns=[*FEATURES[:13], "x"]),
        "name some features but not all",
    ),
    "a 1-D array": (
        lambda: np.zeros(14),
        r"expected a 2-D array of rows x 14 features, got an array of shape \(14,\)",
    ),
    "ragged rows": (
        lambda: [[0] * 14, [0] * 13],
        r"expected rows of 14 values each, got rows of \[13, 14\] values",
    ),
    "a string cell": (
        lambda: [[0] * 13 + ["up"]],
        "expected numbers in 14 feature columns .*got 'up' in row 0, column 13 \\(f13\\)",
    ),
    "numeric strings": (lambda: pd.DataFrame([["1"] * 14]), "got '1' in row 0, column 0"),
    "beyond float32": (
        lambda: np.full((1, 14), 1e39),
        r"expected finite numbers or NaN \(missing\), got 1e\+39",
    ),
    "infinity": (lambda: np.full((1, 14), np.inf), r"expected finite numbers or NaN \(missing\), got inf"),
    "a scalar": (lambda: 3, "expected a DataFrame, a 2-D array or a list of rows .* got int"),
    "dates": (
        lambda: pd.DataFrame({i: pd.to_datetime(["2024-01-01"]) for i in range(14)}),
        "expected numbers",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("shape", list(REJECTED))
def test_anything_else_gets_one_line_saying_what_was_expected(champion, shape: str) -> None:
    _, model = champion
    make, message = REJECTED[shape]
    with pytest.raises(MlflowException, match=message) as raised:
        model.predict(make())
    assert "\n" not in raised.value.message
    # INVALID_PARAMETER_VALUE is what `mlflow models serve` answers with HTTP 400.
    assert raised.value.get_http_status_code() == 400


@pytest.mark.slow
def test_the_native_flavour_still_gives_the_booster_with_its_feature_names(champion) -> None:
    booster, _ = champion
    native = mlflow.xgboost.load_model(f"models:/{config.MODEL_NAME}@{config.ALIAS_CHAMPION}")
    assert isinstance(native, xgb.Booster)
    assert native.feature_names == FEATURES
    frame = pd.DataFrame(ROWS.astype(np.float32), columns=FEATURES)
    np.testing.assert_allclose(native.inplace_predict(frame), booster.inplace_predict(frame))


@pytest.mark.slow
def test_the_model_carries_its_contract_and_serving_code(champion) -> None:
    _, model = champion
    assert model.metadata.metadata[config.FEATURES_KEY] == FEATURES
    # No input schema: MLflow would enforce it by name before the contract sees the input.
    assert model.metadata.get_input_schema() is None
    assert model.metadata.flavors["python_function"]["loader_module"] == "pystock_serving"
    # The model runs its own copy of the serving code, from its code/ folder.
    assert Path(sys.modules["pystock_serving"].__file__).parent.name == "code"


@pytest.mark.slow
def test_the_model_loads_where_this_project_is_not_installed(champion, tracking_uri, tmp_path) -> None:
    booster, uri = champion[0], f"models:/{config.MODEL_NAME}@{config.ALIAS_CHAMPION}"
    code = (
        "import sys, mlflow\n"
        "assert 'pystock_training' not in sys.modules\n"
        f"print(mlflow.pyfunc.load_model({uri!r}).predict([[1] * 14])[0])\n"
    )
    env = subprocess_env(tracking_uri)
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = booster.inplace_predict(pd.DataFrame(np.ones((1, 14), dtype=np.float32), columns=FEATURES))[0]
    assert float(result.stdout.strip().splitlines()[-1]) == pytest.approx(float(expected), rel=1e-6)


# --- over HTTP, through a real `mlflow models serve` ---------------------------------------------


LOOPBACK = ("-h", "127.0.0.1", "-p")


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, xgb.Booster]]:
    folder = tmp_path_factory.mktemp("served")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    booster, model_uri = register(uri, folder)
    port = free_port()
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            *LOOPBACK,
            str(port),
        ],
        cwd=folder,
        env=subprocess_env(uri),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool | None:
        assert serve.poll() is None, serve.stderr.read().decode()[-3000:]
        try:
            return True if requests.get(f"{url}/ping", timeout=2).ok else None
        except requests.RequestException:
            return None

    try:
        poll_until(answers, timeout=120, what="mlflow models serve's /ping", interval=0.5)
        yield url, booster
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)


NAMED = pd.DataFrame(ROWS, columns=FEATURES)
REFUSED_OVER_HTTP = [
    ({"inputs": np.zeros((2, 15)).tolist()}, "expected 14 feature columns (f0..f13 or positional), got 15"),
    ({"dataframe_split": {"data": np.zeros((2, 13)).tolist()}}, "got 13"),
    ({"instances": [[0] * 13 + ["up"]]}, "got 'up' in row 0, column 13 (f13)"),
    # Ragged JSON rows never reach the model: MLflow's parser refuses them (also a 400).
    ({"instances": [[0] * 14, [0] * 13]}, "inhomogeneous shape"),
    (
        {"dataframe_split": {"columns": [*FEATURES[:13], "x"], "data": np.zeros((1, 14)).tolist()}},
        "name some features but not all",
    ),
    ({"dataframe_records": [dict.fromkeys([*FEATURES, "y"], 0)]}, "got 15"),
    ({"dataframe_split": {"data": [["1"] * 14]}}, "got '1' in row 0, column 0 (f0)"),
]
BODIES = {
    "dataframe_split with names": {"dataframe_split": {"columns": FEATURES, "data": ROWS.tolist()}},
    "dataframe_split without columns": {"dataframe_split": {"data": ROWS.tolist()}},
    "dataframe_split with int names": {
        "dataframe_split": {"columns": list(range(14)), "data": ROWS.tolist()}
    },
    "dataframe_split with string names": {
        "dataframe_split": {"columns": [str(i) for i in range(14)], "data": ROWS.tolist()}
    },
    "dataframe_records named": {"dataframe_records": NAMED.to_dict("records")},
    "dataframe_records positional": {"dataframe_records": pd.DataFrame(ROWS).to_dict("records")},
    "inputs": {"inputs": ROWS.tolist()},
    "instances": {"instances": ROWS.tolist()},
    "instances with a null": {"instances": [[None, *row[1:]] for row in ROWS.tolist()]},
}


@pytest.mark.slow
@pytest.mark.parametrize("body", list(BODIES))
def test_every_json_shape_is_answered_over_http(served, body: str) -> None:
    url, booster = served
    rows = np.array([[np.nan if value is None else value for value in row] for row in _rows_of(BODIES[body])])
    expected = booster.inplace_predict(pd.DataFrame(rows.astype(np.float32), columns=FEATURES))
    response = requests.post(f"{url}/invocations", json=BODIES[body], timeout=30)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6)


def _rows_of(body: dict) -> list[list]:
    ((kind, payload),) = body.items()
    if kind == "dataframe_split":
        return payload["data"]
    if kind == "dataframe_records":
        return [list(record.values()) for record in payload]
    return payload


@pytest.mark.slow
@pytest.mark.parametrize(("body", "message"), REFUSED_OVER_HTTP)
def test_a_bad_shape_over_http_is_a_400_saying_what_was_expected(served, body: dict, message: str) -> None:
    url, _ = served
    response = requests.post(f"{url}/invocations", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]


@pytest.mark.slow
def test_a_csv_body_is_answered_over_http(served) -> None:
    # MLflow's CSV parser reads the first line as the header, so a CSV body carries one; its
    # names (0..13 here, as pandas writes them) are taken by position.
    url, booster = served
    body = pd.DataFrame(ROWS).to_csv(index=False)
    response = requests.post(
        f"{url}/invocations", data=body, headers={"Content-Type": "text/csv"}, timeout=30
    )
    assert response.status_code == 200, response.text
    expected = booster.inplace_predict(pd.DataFrame(ROWS.astype(np.float32), columns=FEATURES))
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6)


def test_the_serving_module_and_config_name_the_same_metadata_key() -> None:
    # serving.py travels alone with each model, so it cannot import config.
    assert serving.FEATURES_KEY == config.FEATURES_KEY


@pytest.mark.slow
def test_the_serving_check_passes_a_version_that_takes_every_shape(champion) -> None:
    booster, _ = champion
    predictions = serving_check(config.MODEL_NAME, "1")
    example = pd.DataFrame(np.zeros((3, 14), dtype=np.float32), columns=FEATURES)
    np.testing.assert_allclose(predictions, booster.inplace_predict(example), rtol=1e-6)


@pytest.mark.slow
def test_the_serving_check_refuses_a_version_that_takes_only_named_columns(tracking_uri) -> None:
    # What the project logged before: the stock xgboost flavour with a named signature, which
    # a headerless CSV's int columns 0..13 do not match.
    booster = fitted_booster()
    example = pd.DataFrame(np.zeros((3, 14)), columns=FEATURES)
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(
            booster, name="model", signature=infer_signature(example), input_example=example
        )
    version = mlflow.register_model(info.model_uri, config.MODEL_NAME).version
    with pytest.raises(PystockError, match="refused the positional input shape"):
        serving_check(config.MODEL_NAME, str(version))


@pytest.mark.slow
def test_loading_a_model_first_leaves_this_package_importable(champion, tracking_uri) -> None:
    # MLflow puts the model's code/ first on sys.path: nothing there may hide this package.
    code = (
        "import mlflow\n"
        f"mlflow.pyfunc.load_model('models:/{config.MODEL_NAME}@{config.ALIAS_CHAMPION}')\n"
        "import pystock_training.data\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=subprocess_env(tracking_uri),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
