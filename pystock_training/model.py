"""Fit the XGBoost up/down classifier with early stopping."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import Model, ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema
from mlflow.utils import environment as mlflow_environment

from pystock_training import config, serving
from pystock_training.params import TrainParams
from pystock_training.tracking import signals_held

logger = logging.getLogger(__name__)

# What MLflow's requirement inference lists for this model (on MLflow 3.17), pinned to
# the versions installed here, so the serving environment matches the training one.
# The name pystock_training/serving.py has inside each logged model (its code/ folder), and so
# the pyfunc flavour's loader_module.
SERVING_MODULE = "pystock_serving"
MODEL_REQUIREMENTS = ("mlflow", "xgboost", "numpy", "pandas", "scikit-learn", "scipy")


def fit(
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    x_valid: pd.DataFrame,
    y_valid: np.ndarray,
    params: TrainParams,
    w_train: np.ndarray | None = None,
    w_valid: np.ndarray | None = None,
) -> xgb.Booster:
    """Train on the training rows, stop early on the validation rows, keep only the best rounds.

    ``w_train`` and ``w_valid`` weight each row (how many rows a distinct row stands for), and
    labels may then be means in [0, 1]. The returned booster is cut to its best iteration, so
    every consumer (this process, the pyfunc flavour, the registry) predicts with the same trees.
    """
    # QuantileDMatrix keeps only the binned features (1 byte a cell here), not a float copy of
    # the frame; the validation matrix reuses the training bins, as it must.
    with signals_held():
        dtrain = xgb.QuantileDMatrix(x_train, label=y_train, weight=w_train)
        dvalid = xgb.QuantileDMatrix(x_valid, label=y_valid, weight=w_valid, ref=dtrain)
    booster = xgb.train(
        params.booster_params(),
        dtrain,
        num_boost_round=params.num_boost_round,
        evals=[(dtrain, "train"), (dvalid, "validation")],
        early_stopping_rounds=params.early_stopping_rounds if params.early_stopping_rounds > 0 else None,
        verbose_eval=False,
    )
    best = getattr(booster, "best_iteration", None)
    if best is not None:
        logger.info("early stopping kept %d of %d rounds", best + 1, booster.num_boosted_rounds())
        booster = booster[: best + 1]
    return booster


def predict_proba(booster: xgb.Booster, features: pd.DataFrame) -> np.ndarray:
    """Probability of "up" for each row, as float64 (sklearn metrics want float64)."""
    # inplace_predict reads the frame's memory directly: no DMatrix copy of the rows.
    return np.asarray(booster.inplace_predict(features), dtype=np.float64)


def model_requirements() -> list[str]:
    """Exact pins of the packages a logged model needs to load and predict."""
    return [f"{name}=={version(name)}" for name in MODEL_REQUIREMENTS]


def log_model(booster: xgb.Booster, name: str, input_example: pd.DataFrame) -> ModelInfo:
    """Log the booster as a model whose pyfunc flavour is ``pystock_training/serving.py``.

    The files are the xgboost flavour's (``mlflow.xgboost.load_model`` gives the Booster); only
    the pyfunc loader differs. Its module travels in the model's ``code/`` folder (as
    ``pystock_serving``), so the model loads where this package is not installed, and each
    model runs the serving code it was logged with. The signature declares the output only:
    an input schema would make MLflow refuse, before the loader sees them, the positional and
    numpy inputs the contract accepts (see serving.py). The feature names go in the MLmodel
    metadata instead, where the gate compares them with the champion's.
    """
    return Model.log(
        artifact_path=None,
        name=name,
        flavor=_FLAVOR,
        booster=booster,
        signature=ModelSignature(outputs=Schema([ColSpec("double")])),
        input_example=input_example,
        # Naming the requirements skips MLflow's inference, which re-imports the model in a
        # subprocess (about 3 s a run); these are what that inference finds.
        pip_requirements=model_requirements(),
        metadata={config.FEATURES_KEY: list(booster.feature_names or [])},
        # MLflow would load the model and predict the example here, and only warn if that
        # failed; register_model's serving check does it strictly, from the registry, in
        # every client shape.
        validate_serving_input=False,
    )


# The MLflow function that checks a model's pip requirements against this environment. To do
# so it maps every installed package to its modules, about half a second a model; the model's
# requirements are this environment's own versions (model_requirements), so it has nothing to
# find. tests/test_model.py holds this name to the pinned MLflow.
REQUIREMENTS_CHECK = "warn_dependency_requirement_mismatches"


@contextmanager
def _requirements_check_skipped() -> Iterator[None]:
    """Within the block, MLflow takes the model's requirements as given."""
    check = getattr(mlflow_environment, REQUIREMENTS_CHECK)
    setattr(mlflow_environment, REQUIREMENTS_CHECK, lambda requirements: None)
    try:
        yield
    finally:
        setattr(mlflow_environment, REQUIREMENTS_CHECK, check)


def _save_model(path: str, mlflow_model: Model, booster: xgb.Booster, **kwargs: Any) -> None:
    # Model.log passes its own options on to the flavour; this one is for Model.log alone.
    kwargs.pop("validate_serving_input", None)
    with tempfile.TemporaryDirectory() as scratch, _requirements_check_skipped():
        # Only the serving module, under a top-level name of its own: MLflow puts the model's
        # code/ first on sys.path, where a folder named like this package would hide it.
        module = Path(scratch) / f"{SERVING_MODULE}.py"
        shutil.copyfile(serving.__file__, module)
        mlflow.xgboost.save_model(
            booster, path, mlflow_model=mlflow_model, code_paths=[str(module)], **kwargs
        )
    mlflow_model.flavors["python_function"]["loader_module"] = SERVING_MODULE
    mlflow_model.save(str(Path(path) / "MLmodel"))


# What ``Model.log`` needs of a flavour module: a name and a ``save_model``.
_FLAVOR = SimpleNamespace(__name__=SERVING_MODULE, save_model=_save_model)
