"""The model's pyfunc face: one input contract for every way a client calls it.

Clients that exist send the 14 features in several shapes: a frame named ``f0..f13``, a
headerless CSV read with ``pd.read_csv(f, header=None)`` (int columns ``0..13``), a numpy array,
JSON rows of positional values. MLflow's schema enforcement matches columns by name, so a named
signature refuses all but the first, and an unnamed one refuses bools and lets a 15-column frame
through. This module therefore owns the contract: the logged model has no input schema, and
``mlflow.pyfunc`` loads the booster through ``_load_pyfunc`` here, which accepts

- a DataFrame whose columns are exactly the feature names (in any order), or any DataFrame with
  exactly as many columns as features, taken by position;
- a 2-D numpy array, a list of rows, a list of records or a dict of columns;
- values of any numeric or bool dtype, NaN or null meaning missing, as in training;

and refuses anything else with one line saying what it expected and what came. The error is an
``MlflowException`` with ``INVALID_PARAMETER_VALUE``, which ``mlflow models serve`` answers with
HTTP 400. The model keeps its ``xgboost`` flavour: ``mlflow.xgboost.load_model`` gives the
Booster, with its feature names.

This file is logged with every model (its ``code/`` folder) and imports only what a serving
environment has: numpy, pandas, xgboost and mlflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

# The MLmodel metadata key that lists the model's feature names, in order: the input contract
# the registry compares between a candidate and the champion.
FEATURES_KEY = "features"


class InputContractError(MlflowException):
    """The input does not have the model's features; served, it is an HTTP 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


class PystockModel:
    """The booster behind ``mlflow.pyfunc``: normalises the input, returns P(up) per row."""

    def __init__(self, booster: xgb.Booster) -> None:
        self.booster = booster
        self.features = list(booster.feature_names or [f"f{i}" for i in range(booster.num_features())])

    def get_raw_model(self) -> xgb.Booster:
        """The xgboost Booster, as MLflow's own xgboost wrapper exposes it."""
        return self.booster

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """The probability of "up" for each input row, as float64.

        Raises:
            InputContractError: The input is not rows of the model's features.
        """
        matrix = feature_matrix(model_input, self.features)
        if len(matrix) == 0:
            return np.empty(0, dtype=np.float64)
        # A plain array: XGBoost checks its width, not names, and reads it without a copy.
        return np.asarray(self.booster.inplace_predict(matrix), dtype=np.float64)


def _load_pyfunc(path: str) -> PystockModel:
    """Called by ``mlflow.pyfunc.load_model`` with the booster file's path."""
    booster = xgb.Booster()
    booster.load_model(path)
    return PystockModel(booster)


def contract(features: list[str]) -> str:
    """The accepted shapes in a few words, for error messages and descriptions."""
    names = f"{features[0]}..{features[-1]}" if len(features) > 1 else features[0]
    return f"{len(features)} feature columns ({names} or positional)"


def feature_matrix(model_input: Any, features: list[str]) -> np.ndarray:
    """The input as a float32 matrix of the model's features, NaN for missing.

    Raises:
        InputContractError: Wrong type, shape, column names or cell values.
    """
    if isinstance(model_input, Mapping):
        model_input = _frame_from(pd.DataFrame, model_input, features)
    elif isinstance(model_input, list | tuple):
        if model_input and all(isinstance(row, Mapping) for row in model_input):
            model_input = _frame_from(pd.DataFrame.from_records, model_input, features)
        else:
            model_input = _rows_array(model_input, features)
    if isinstance(model_input, pd.DataFrame):
        return _frame_matrix(model_input, features)
    if isinstance(model_input, np.ndarray):
        if model_input.ndim != 2:
            raise InputContractError(
                f"expected a 2-D array of rows x {len(features)} features, got an array of shape "
                f"{model_input.shape}"
            )
        _check_width(model_input.shape[1], features)
        return _numeric(model_input, features)
    raise InputContractError(
        f"expected a DataFrame, a 2-D array or a list of rows with {contract(features)}, "
        f"got {type(model_input).__name__}"
    )


def _frame_from(make: Any, data: Any, features: list[str]) -> pd.DataFrame:
    try:
        return make(data)
    except (TypeError, ValueError) as exc:
        message = f"expected {contract(features)}; could not read the input as a table: {exc}"
        raise InputContractError(message) from exc


def _rows_array(rows: list | tuple, features: list[str]) -> np.ndarray:
    widths = {len(row) if isinstance(row, list | tuple | np.ndarray) else None for row in rows}
    if None in widths:
        raise InputContractError(f"expected a list of rows, each a list of {len(features)} numbers")
    if len(widths) > 1:
        raise InputContractError(
            f"expected rows of {len(features)} values each, got rows of {sorted(widths)} values"
        )
    if not rows:
        return np.empty((0, len(features)), dtype=np.float32)
    # numpy's own inference first (fast, and numeric when every cell is a number); a mix with
    # strings or nulls becomes a str or object array that _numeric checks cell by cell.
    return np.array(rows)


def _check_width(width: int, features: list[str]) -> None:
    if width != len(features):
        raise InputContractError(f"expected {contract(features)}, got {width}")


def _frame_matrix(frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    names = [str(column) for column in frame.columns]
    named = [name for name in names if name in features]
    if sorted(named) == sorted(features) and len(names) == len(features):
        # By name, in the model's order, wherever the client put them.
        order = {name: position for position, name in enumerate(names)}
        frame = frame.iloc[:, [order[name] for name in features]]
    elif named and len(names) == len(features):
        # Some columns carry feature names and some do not: taking them by position could
        # silently feed f3 where f2 belongs.
        raise InputContractError(
            f"expected {contract(features)}; the columns {names} name some features but not all"
        )
    else:
        _check_width(len(names), features)
    if all(pd.api.types.is_numeric_dtype(dtype) for dtype in frame.dtypes):
        return _finite(frame.to_numpy(dtype=np.float64, na_value=np.nan), features)
    return _numeric(frame.to_numpy(dtype=object), features)


def _numeric(values: np.ndarray, features: list[str]) -> np.ndarray:
    """Cast to float32, refusing cells that are not numbers: a string "1" is a client's bug."""
    if values.dtype.kind in "biuf":
        return _finite(values, features)
    if values.dtype.kind in "US":
        # JSON rows mixing numbers and a string arrive as all strings: point at the cell that
        # is not even a number written as text, as the client wrote it.
        ok = np.frompyfunc(_reads_as_number, 1, 1)(values).astype(bool)
        if ok.all():
            ok[:] = False
    elif values.dtype == object:
        ok = np.frompyfunc(_is_number_or_missing, 1, 1)(values).astype(bool)
    else:
        raise InputContractError(f"expected numeric {contract(features)}, got values of type {values.dtype}")
    if not ok.all():
        row, column = np.argwhere(~ok)[0]
        cell = values[row, column]
        cell = cell.item() if isinstance(cell, np.generic) else cell
        raise InputContractError(
            f"expected numbers in {contract(features)}, got {cell!r} in row {row}, "
            f"column {column} ({features[column]}); use NaN or null for a missing value"
        )
    missing = np.frompyfunc(lambda cell: cell is None or cell is pd.NA, 1, 1)(values).astype(bool)
    return _finite(np.where(missing, np.nan, values).astype(np.float64), features)


def _is_number_or_missing(cell: object) -> bool:
    return cell is None or cell is pd.NA or isinstance(cell, Real | np.bool_)


def _reads_as_number(cell: str | bytes) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _finite(matrix: np.ndarray, features: list[str]) -> np.ndarray:
    """Refuse infinities and values beyond float32 (XGBoost's own precision); return float32."""
    too_big = np.abs(matrix) > np.finfo(np.float32).max
    if too_big.any():
        row, column = np.argwhere(too_big)[0]
        raise InputContractError(
            f"expected finite numbers or NaN (missing), got {matrix[row, column]} in row {row}, "
            f"column {column} ({features[column]})"
        )
    return matrix.astype(np.float32, copy=False)
