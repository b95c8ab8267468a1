"""Fit the XGBoost up/down classifier with early stopping."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from importlib.metadata import version

import numpy as np
import pandas as pd
import xgboost as xgb

from pystock_training.params import TrainParams

logger = logging.getLogger(__name__)

# What MLflow's requirement inference lists for this model (measured on MLflow 3.17), pinned to
# the versions installed here, so the serving environment matches the training one.
MODEL_REQUIREMENTS = ("mlflow", "xgboost", "numpy", "pandas", "scikit-learn", "scipy")


HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGINT while XGBoost calls back into Python, then deliver them.

    QuantileDMatrix pulls its data through a ctypes callback. An exception that a signal handler
    raises inside that callback is swallowed by ctypes and leaves XGBoost's iterator half-done:
    a SIGTERM at that moment aborted the step with ``munmap_chunk(): invalid pointer`` instead of
    ending its run KILLED (seen in the SIGTERM end-to-end test on a loaded machine). Held signals
    go to the handlers that were installed before, as soon as the block ends, so a stop request
    waits at most as long as the matrices take to build. Signal handlers belong to the main
    thread, so elsewhere this does nothing.
    """
    previous = {signum: signal.getsignal(signum) for signum in HELD_SIGNALS}
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        # None: a handler installed from C, which Python cannot put back.
        yield
        return
    received: list[int] = []
    for signum in HELD_SIGNALS:
        signal.signal(signum, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            # Re-raised against the restored handler: Terminated for SIGTERM under the scripts,
            # KeyboardInterrupt for SIGINT, or the default action.
            signal.raise_signal(signum)


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
