"""Fit the XGBoost up/down classifier with early stopping."""

from __future__ import annotations

import logging
from importlib.metadata import version

import numpy as np
import pandas as pd
import xgboost as xgb

from pystock_training.params import TrainParams
from pystock_training.tracking import signals_held

logger = logging.getLogger(__name__)

# What MLflow's requirement inference lists for this model (measured on MLflow 3.17), pinned to
# the versions installed here, so the serving environment matches the training one.
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
