"""The pipeline's parameters: their dataclasses, defaults and range checks.

Kept free of xgboost, sklearn and matplotlib so that the driver (main), which validates every
parameter before it starts a step, imports only MLflow: about 120 MB and 1 s less per pipeline.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

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


def default_predictions_file(run_id: str) -> Path:
    """A predictions path unique to one run, so concurrent pipelines never share a file."""
    return Path(tempfile.gettempdir()) / "pystock-training" / run_id / config.PREDICTIONS_FILE_NAME


def check_gate_metric(metric: str) -> None:
    """Raise ValueError for a metric the gate does not know the direction of."""
    if metric not in config.METRIC_NAMES:
        raise ValueError(f"unknown gate_metric {metric!r}; expected one of {', '.join(config.METRIC_NAMES)}")


def check_gate_params(params: GateParams) -> None:
    """Raise ValueError for gate parameters that would make every verdict meaningless."""
    check_gate_metric(params.gate_metric)
    if not math.isfinite(params.min_score):
        raise ValueError(f"min_score must be a finite number, got {params.min_score}")
    if not (math.isfinite(params.max_regression) and params.max_regression >= 0):
        raise ValueError(f"max_regression must be a finite number >= 0, got {params.max_regression}")


def check_train_params(split: str, test_size: float, threshold: float, params: TrainParams) -> None:
    """Reject parameter values that would train something meaningless.

    Raises:
        PystockError: A value is out of range.
    """
    problems = []
    if split not in config.SPLITS:
        problems.append(f"split must be one of {', '.join(config.SPLITS)}, got {split!r}")
    if not 0 < test_size < 1:
        problems.append(f"test_size must be between 0 and 1, got {test_size}")
    if not 0 < threshold < 1:
        problems.append(f"threshold must be between 0 and 1, got {threshold}")
    if params.num_boost_round < 1:
        problems.append(f"num_boost_round must be at least 1, got {params.num_boost_round}")
    if params.max_depth < 1:
        problems.append(f"max_depth must be at least 1, got {params.max_depth}")
    if not 0 < params.learning_rate <= 1:
        problems.append(f"learning_rate must be in (0, 1], got {params.learning_rate}")
    if params.early_stopping_rounds < 0:
        problems.append(f"early_stopping_rounds must be 0 (off) or more, got {params.early_stopping_rounds}")
    if not 0 <= params.random_state < 2**32:
        problems.append(f"random_state must be in [0, 2**32), got {params.random_state}")
    if problems:
        raise PystockError("invalid parameters: " + "; ".join(problems))


def check_register_params(model_name: str, gate: GateParams) -> None:
    """Reject a registration that could only record a meaningless decision.

    Raises:
        PystockError: Empty model name, unknown gate metric, or a non-finite or negative threshold.
    """
    if not model_name.strip():
        raise PystockError("invalid parameters: model_name must not be empty")
    try:
        check_gate_params(gate)
    except ValueError as exc:
        raise PystockError(f"invalid parameters: {exc}") from exc
