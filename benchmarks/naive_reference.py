"""The pipeline's core work done the naive way, in one process: what benchmarks/scale.py compares to.

    .venv/bin/python benchmarks/naive_reference.py --data-file data.csv --predictions-file out.csv

What a notebook would do: pandas' default read_csv (an int64 frame), the pipeline's time split,
``xgb.DMatrix`` from the frames, ``xgb.train`` with the pipeline's booster parameters and early
stopping, a per-row Python threshold, ``DataFrame.to_csv`` and ``read_csv`` for the hand-off, and
the pipeline's sklearn metrics. Naive, but correct: on the same file and settings it trains the
same model and scores the same test rows as the pipeline. It leaves out what the pipeline adds
(tracking, registry, gate, validation, hashing, baseline and champion metrics, plots, the saved
model), so the comparison favours it.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import click
import pandas as pd
import xgboost as xgb
from sklearn import metrics as skm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pystock_training import config

logger = logging.getLogger("naive_reference")


class _Laps:
    """Seconds per stage, each counted from the end of the one before."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, stage: str) -> None:
        now = time.monotonic()
        self.seconds[stage] = now - self._last
        self._last = now


def naive_reference(
    data_file: str | Path,
    predictions_file: str | Path,
    *,
    num_boost_round: int = config.NUM_BOOST_ROUND,
    max_depth: int = config.MAX_DEPTH,
    learning_rate: float = config.LEARNING_RATE,
    early_stopping_rounds: int = config.EARLY_STOPPING_ROUNDS,
    random_state: int = config.RANDOM_STATE,
    test_size: float = config.TEST_SIZE,
    validation_fraction: float = config.VALIDATION_FRACTION,
    threshold: float = config.THRESHOLD,
) -> dict[str, float]:
    """Load, split, train, predict, write and re-read the predictions, and score them.

    Returns:
        The test metrics, by the names the pipeline logs them under.
    """
    laps = _Laps()

    frame = pd.read_csv(data_file, header=None)
    features, labels = frame.iloc[:, :-1], frame.iloc[:, -1]
    # The pipeline's time split (data.split_rows): the last ceil(test_size * n) rows are the test
    # set, and the last ceil(validation_fraction * n_fit) rows of the rest validate.
    n_rows = len(frame)
    n_fit = n_rows - math.ceil(test_size * n_rows)
    n_train = n_fit - math.ceil(validation_fraction * n_fit)
    x_train, y_train = features.iloc[:n_train], labels.iloc[:n_train]
    x_valid, y_valid = features.iloc[n_train:n_fit], labels.iloc[n_train:n_fit]
    x_test, y_test = features.iloc[n_fit:], labels.iloc[n_fit:]
    laps.lap("load")

    params = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "max_depth": max_depth,
        "learning_rate": learning_rate,
        "tree_method": "hist",
        "seed": random_state,
    }
    dtrain = xgb.DMatrix(x_train, label=y_train)
    dvalid = xgb.DMatrix(x_valid, label=y_valid)
    # The pipeline's evals, train included: the same per-round work, and early stopping watches
    # the last one (validation) in both.
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=num_boost_round,
        evals=[(dtrain, "train"), (dvalid, "validation")],
        early_stopping_rounds=early_stopping_rounds if early_stopping_rounds > 0 else None,
        verbose_eval=False,
    )
    laps.lap("fit")

    # Booster.predict uses every round unless told otherwise; the pipeline keeps the best ones.
    best = getattr(booster, "best_iteration", None)
    rounds = booster.num_boosted_rounds() if best is None else best + 1
    proba = booster.predict(xgb.DMatrix(x_test), iteration_range=(0, rounds))
    y_pred = [1 if p >= threshold else 0 for p in proba]
    laps.lap("predict")

    pd.DataFrame({"y_test": y_test.to_numpy(), "y_pred": y_pred, "y_proba": proba}).to_csv(
        predictions_file, index=False
    )
    laps.lap("write")

    predictions = pd.read_csv(predictions_file)
    y_true, y_hard, y_soft = predictions["y_test"], predictions["y_pred"], predictions["y_proba"]
    scores = {
        "accuracy": skm.accuracy_score(y_true, y_hard),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_hard),
        "precision": skm.precision_score(y_true, y_hard, zero_division=0),
        "recall": skm.recall_score(y_true, y_hard, zero_division=0),
        "f1": skm.f1_score(y_true, y_hard, zero_division=0),
        "mcc": skm.matthews_corrcoef(y_true, y_hard),
        # Probabilities, never hard labels, for these three.
        "roc_auc": skm.roc_auc_score(y_true, y_soft),
        "average_precision": skm.average_precision_score(y_true, y_soft),
        "log_loss": skm.log_loss(y_true, y_soft, labels=[0, 1]),
    }
    laps.lap("evaluate")

    logger.info(
        "%d rows: %d train, %d validation, %d test; %d of %d rounds kept",
        n_rows,
        n_train,
        n_fit - n_train,
        n_rows - n_fit,
        rounds,
        booster.num_boosted_rounds(),
    )
    logger.info(
        "timings: %s", ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in laps.seconds.items())
    )
    logger.info("metrics: %s", ", ".join(f"{name} {value:.4f}" for name, value in scores.items()))
    return {name: float(value) for name, value in scores.items()}


@click.command()
@click.option("--data-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--predictions-file", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--num-boost-round", type=int, default=config.NUM_BOOST_ROUND, show_default=True)
@click.option("--max-depth", type=int, default=config.MAX_DEPTH, show_default=True)
@click.option("--learning-rate", type=float, default=config.LEARNING_RATE, show_default=True)
@click.option("--early-stopping-rounds", type=int, default=config.EARLY_STOPPING_ROUNDS, show_default=True)
@click.option("--random-state", type=int, default=config.RANDOM_STATE, show_default=True)
@click.option("--test-size", type=float, default=config.TEST_SIZE, show_default=True)
@click.option("--validation-fraction", type=float, default=config.VALIDATION_FRACTION, show_default=True)
@click.option("--threshold", type=float, default=config.THRESHOLD, show_default=True)
def main(data_file: Path, predictions_file: Path, **settings: float) -> None:
    """Train and score the classifier on DATA_FILE in one process, the naive way."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    naive_reference(data_file, predictions_file, **settings)


if __name__ == "__main__":
    main()
