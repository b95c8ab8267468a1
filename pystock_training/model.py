"""Fit the XGBoost up/down classifier with early stopping."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xgboost as xgb

from pystock_training import config

logger = logging.getLogger(__name__)


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


def fit(
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    x_valid: pd.DataFrame,
    y_valid: np.ndarray,
    params: TrainParams,
) -> xgb.Booster:
    """Train on the training rows, stop early on the validation rows, keep only the best rounds.

    The returned booster is cut to its best iteration, so every consumer (this process, the
    pyfunc flavour, the registry) predicts with the same trees.
    """
    dtrain = xgb.DMatrix(x_train, label=y_train)
    dvalid = xgb.DMatrix(x_valid, label=y_valid)
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
    return booster.predict(xgb.DMatrix(features)).astype(np.float64)
