"""The pipeline's parameters: their dataclasses, defaults and range checks.

Kept free of xgboost, sklearn and matplotlib so that the driver (main), which validates every
parameter before it starts a step, imports only MLflow: about 120 MB and 1 s less per pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pystock_training import config
from pystock_training.errors import PystockError

# The parameters train_model takes from the driver, by their pipeline-wide names.
TRAIN_PARAMETERS = (
    "model_name",
    "split",
    "test_size",
    "random_state",
    "threshold",
    "num_boost_round",
    "max_depth",
    "learning_rate",
    "early_stopping_rounds",
)
# Training parameters left out of the run key, each with why: the same key then means the same
# model. Every other training parameter is in it, so a new one cannot be forgotten.
NOT_IN_RUN_KEY = {
    "threshold": "turns the same probabilities into labels; the model does not change",
}
# allow_schema_change does not change the model, but a rejection for a changed input contract is
# final: the same key with the flag set must train again, or the flag could never take effect.
RUN_KEY_PARAMETERS = (
    *(name for name in TRAIN_PARAMETERS if name not in NOT_IN_RUN_KEY),
    "allow_schema_change",
)


@dataclass(frozen=True)
class TrainParams:
    """XGBoost settings; field names are the pipeline's parameter names."""

    num_boost_round: int = config.NUM_BOOST_ROUND
    max_depth: int = config.MAX_DEPTH
    learning_rate: float = config.LEARNING_RATE
    early_stopping_rounds: int = config.EARLY_STOPPING_ROUNDS
    random_state: int = config.RANDOM_STATE

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> TrainParams:
        """The fields of ``values`` that are XGBoost settings; other keys are ignored."""
        return cls(**{key: values[key] for key in cls.__dataclass_fields__ if key in values})

    def booster_params(self) -> dict[str, object]:
        """The ``params`` dict for ``xgb.train``."""
        # binary:logistic, not the default regression objective: predictions are probabilities.
        # logloss drives early stopping because it is the last (only) eval metric.
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "tree_method": "hist",
            "seed": self.random_state,
        }


@dataclass(frozen=True)
class GateParams:
    """The gate's parameters, by their pipeline-wide names."""

    gate_metric: str
    min_score: float
    max_regression: float
    allow_schema_change: bool = config.ALLOW_SCHEMA_CHANGE


@dataclass(frozen=True)
class Bounds:
    """The range a float parameter must lie in; NaN and infinities are never in it."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        if self.low == -math.inf and self.high == math.inf:
            return "a finite number"
        if self.high == math.inf:
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        if self.low_open and self.high_open:
            return f"between {self.low:g} and {self.high:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


# Every float parameter of every entry point, with its range: the one place they are checked.
FLOAT_BOUNDS = {
    "test_size": Bounds(0, 1, low_open=True, high_open=True),
    "threshold": Bounds(0, 1, low_open=True, high_open=True),
    "learning_rate": Bounds(0, 1, low_open=True),
    "min_score": Bounds(),
    "max_regression": Bounds(0),
    "reap_after_hours": Bounds(0),
}


def float_problem(name: str, value: float) -> str | None:
    """What is wrong with a float parameter's value, or None when it is in range."""
    bounds = FLOAT_BOUNDS[name]
    return None if value in bounds else f"{name} must be {bounds}, got {value}"


def check_floats(values: dict[str, float]) -> None:
    """Refuse float parameters that are NaN, infinite or out of range, all in one line.

    Raises:
        PystockError: A value is out of range.
    """
    problems = [problem for name, value in values.items() if (problem := float_problem(name, value))]
    if problems:
        raise PystockError("invalid parameters: " + "; ".join(problems))


# What the registry takes as a name (no "/" or ":", not "." or starting ".."), and what survives
# a models:/ URI: "@" starts an alias, "?" a query, "#" a fragment, and whitespace at either end
# is stripped by URL parsing. The registry stores at most 256 characters, and the promotion lock
# registers "<name>.promotion-lock" and its tombstone "<that>.broken.<32 hex>" (lock.py).
REGISTRY_NAME_MAX_LENGTH = 256
MODEL_NAME_MAX_LENGTH = REGISTRY_NAME_MAX_LENGTH - len(".promotion-lock.broken.") - 32
_MODEL_NAME_FORBIDDEN = "/:@?#"


def model_name_problem(model_name: str) -> str | None:
    """Why a registered model name would fail in the registry or in a models:/ URI, or None."""
    if not model_name.strip():
        return "model_name must not be empty"
    bad = sorted({char for char in model_name if char in _MODEL_NAME_FORBIDDEN})
    if bad:
        return (
            f"model_name {model_name!r} contains {' '.join(repr(char) for char in bad)}; "
            f"a registered model name cannot contain any of {' '.join(_MODEL_NAME_FORBIDDEN)} "
            "(they break models:/name@alias URIs)"
        )
    if model_name != model_name.strip() or not model_name.isprintable():
        return f"model_name {model_name!r} has leading or trailing spaces or control characters"
    if model_name == "." or model_name.startswith(".."):
        return f"model_name {model_name!r} cannot be '.' or start with '..'"
    if len(model_name) > MODEL_NAME_MAX_LENGTH:
        return f"model_name is {len(model_name)} characters long, at most {MODEL_NAME_MAX_LENGTH} are stored"
    return None


def check_model_name(model_name: str) -> None:
    """Refuse a model name the registry or the models:/ URI syntax would reject, before training.

    Raises:
        PystockError: The name cannot be registered or loaded back by ``models:/name@alias``.
    """
    problem = model_name_problem(model_name)
    if problem:
        raise PystockError(f"invalid parameters: {problem}")


def check_gate_metric(metric: str) -> None:
    """Raise ValueError for a metric the gate does not know the direction of."""
    if metric not in config.METRIC_NAMES:
        raise ValueError(f"unknown gate_metric {metric!r}; expected one of {', '.join(config.METRIC_NAMES)}")


def check_gate_params(params: GateParams) -> None:
    """Raise ValueError for gate parameters that would make every verdict meaningless."""
    check_gate_metric(params.gate_metric)
    for name in ("min_score", "max_regression"):
        problem = float_problem(name, getattr(params, name))
        if problem:
            raise ValueError(problem)


# Far above any useful value (the defaults are 300 rounds of depth 3; early stopping ends a long
# cap), below what breaks XGBoost.
MAX_BOOST_ROUNDS = 1_000_000_000
MAX_DEPTH = 30


def check_train_params(split: str, test_size: float, threshold: float, params: TrainParams) -> None:
    """Reject parameter values that would train something meaningless.

    Raises:
        PystockError: A value is out of range.
    """
    problems = []
    if split not in config.SPLITS:
        problems.append(f"split must be one of {', '.join(config.SPLITS)}, got {split!r}")
    floats = {"test_size": test_size, "threshold": threshold, "learning_rate": params.learning_rate}
    problems.extend(problem for name, value in floats.items() if (problem := float_problem(name, value)))
    # Upper limits too: integral floats make 1e10 easy to type, and XGBoost fails on a depth
    # that large with a traceback, after the data is loaded.
    if not 1 <= params.num_boost_round <= MAX_BOOST_ROUNDS:
        problems.append(f"num_boost_round must be in [1, {MAX_BOOST_ROUNDS}], got {params.num_boost_round}")
    if not 1 <= params.max_depth <= MAX_DEPTH:
        problems.append(f"max_depth must be in [1, {MAX_DEPTH}], got {params.max_depth}")
    if not 0 <= params.early_stopping_rounds <= MAX_BOOST_ROUNDS:
        problems.append(
            f"early_stopping_rounds must be 0 (off) to {MAX_BOOST_ROUNDS}, got {params.early_stopping_rounds}"
        )
    if not 0 <= params.random_state < 2**32:
        problems.append(f"random_state must be in [0, 2**32), got {params.random_state}")
    if problems:
        raise PystockError("invalid parameters: " + "; ".join(problems))


def check_register_params(model_name: str, gate: GateParams) -> None:
    """Reject a registration that could only record a meaningless decision.

    Raises:
        PystockError: A model name the registry or a models:/ URI rejects, an unknown gate
            metric, or a non-finite or negative threshold.
    """
    check_model_name(model_name)
    try:
        check_gate_params(gate)
    except ValueError as exc:
        raise PystockError(f"invalid parameters: {exc}") from exc
