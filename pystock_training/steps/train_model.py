"""The train_model step: load and split the data, fit, predict, score the champion, log the model.

It imports xgboost but not sklearn's metrics or matplotlib, which only evaluate_model needs:
each step is its own process, and what it imports is start-up time and memory it pays.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb

from pystock_training import config
from pystock_training.champion import clean_rows, find_champion, score_champion
from pystock_training.data import Dataset, Split, load_dataset, split_rows
from pystock_training.distinct import distinct_rows
from pystock_training.errors import DataError
from pystock_training.handoff import predictions_sha256, write_predictions
from pystock_training.model import fit, log_model, predict_proba
from pystock_training.params import TrainParams, check_params
from pystock_training.provenance import code_version
from pystock_training.scratch import out_of_space_reported, predictions_path
from pystock_training.tracking import StepTimer, log_missing_params, step_run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What train_model made."""

    run_id: str
    model_uri: str
    predictions_file: Path
    data_digest: str


def train_model(**values: Any) -> TrainResult:
    """Load and split the data, fit the classifier, log the model and write the test predictions.

    ``values`` are train_model's parameters by name (``params.parameters("train_model")``); the
    ones left out take their declared defaults.

    The current ``model_name@champion``, if its inputs fit, is scored on the test rows it
    provably never trained on (``champion.clean_rows``), and its probabilities travel in the
    predictions CSV for the gate. ``data_digest``, when given, is the sha256 the caller (the
    driver's run key) computed: the file must still hash to it as it is read.

    Without ``predictions_file`` the predictions go to a new folder only this user can enter
    (removed if the step fails). The train run records their sha256 (``pystock.predictions_sha256``),
    which evaluate_model checks before it reads them.

    Raises:
        DataError: The data file breaks the data contract, or no longer hashes to ``data_digest``.
        PystockError: A parameter is out of range, or a file could not be written (a full disk
            is one line naming the path).
    """
    params = TrainParams(**values)
    timer = StepTimer()
    with (
        step_run("train_model") as run,
        predictions_path(params.predictions_file or None) as path,
        # Inside the run, so its error tag (which the driver reports) is the one line too.
        out_of_space_reported(),
    ):
        log_missing_params(run, asdict(params))
        # model_name too: run on its own, the step would otherwise train for nothing, as register
        # cannot take the name.
        check_params(asdict(params))
        with timer.phase("champion"):
            # Looked up first: its file's size is the prefix whose digest the load keeps.
            champion = find_champion(params.model_name)
        trained_on = champion.trained_on if champion else None
        with timer.phase("load"):
            dataset = load_dataset(
                params.data_file,
                prefix_sizes=(trained_on.data_size,) if trained_on and trained_on.data_size else (),
            )
        digest = dataset.digest.sha256
        if params.data_digest and digest != params.data_digest:
            raise DataError(
                dataset.path,
                f"changed while the pipeline ran: it now hashes to {digest[:12]}, the run key was "
                f"computed from {params.data_digest[:12]}; re-run when the file is no longer being written",
            )
        mlflow.set_tags(
            {
                config.TAG_DATA_FILE: str(dataset.path),
                config.TAG_DATA_DIGEST: digest,
                config.TAG_DATA_SIZE: str(dataset.digest.size),
                config.TAG_DATA_ROWS: str(dataset.n_rows),
                config.TAG_CODE_VERSION: code_version(),
            }
        )
        _log_dataset_input(dataset, digest)
        parts = split_rows(
            dataset.labels,
            split=params.split,
            test_size=params.test_size,
            random_state=params.random_state,
            source=dataset.path,
        )
        features, labels = dataset.features, dataset.labels
        with timer.phase("fit"):
            booster = _fit_with_autolog(features, labels, parts, params)

        x_test, y_test = features.iloc[parts.test], labels[parts.test]
        with timer.phase("predict"):
            # Each distinct test row is predicted once, by the candidate and the champion alike.
            test_rows = distinct_rows(x_test)
            y_proba = test_rows.predict(lambda rows: predict_proba(booster, rows))
        prior = float(labels[parts.train].mean())
        with timer.phase("champion"):
            clean, why_not_clean = clean_rows(
                trained_on, dataset.digest, dataset.n_rows, np.arange(dataset.n_rows)[parts.test]
            )
            scored = score_champion(champion, x_test, y_test, clean, why_not_clean)
        mlflow.set_tags(
            {
                config.TAG_CHAMPION_VERSION: scored.version or "",
                config.TAG_CHAMPION_STATUS: scored.status[:5000],
                config.TAG_CHAMPION_ROWS_COMPARED: str(scored.rows_compared),
            }
        )
        with timer.phase("write_predictions"):
            write_predictions(path, y_test, y_proba, params.threshold, prior, champion_proba=scored.proba)
            mlflow.set_tag(config.TAG_PREDICTIONS_SHA256, predictions_sha256(path))
            _log_predictions_artifact(path)

        with timer.phase("log_model"):
            # The named shape, as float64 (what pandas reads by default); the serving check
            # also sends these rows positionally, as an array and as a list.
            example = x_test.iloc[: config.EXAMPLE_ROWS].astype(np.float64)
            mlflow.log_dict(_importance(booster), "feature_importance.json")
            model_info = log_model(booster, config.MODEL_ARTIFACT_NAME, example)
        train_rows = _count(parts.train, labels)
        mlflow.log_metrics(
            {
                "train_rows": train_rows,
                "validation_rows": _count(parts.validation, labels),
                "test_rows": len(y_test),
                "training_prior": prior,
                "num_trees": booster.num_boosted_rounds(),
            }
        )
        mlflow.set_tags({config.TAG_MODEL_URI: model_info.model_uri, config.TAG_PREDICTIONS_FILE: str(path)})
        timer.log()
        logger.info(
            "trained %s on %d rows; predictions in %s",
            model_info.model_uri,
            train_rows,
            path,
        )
        return TrainResult(run.info.run_id, model_info.model_uri, path, digest)


def _log_dataset_input(dataset: Dataset, digest: str) -> None:
    """Record the training table as the run's input, by reference: its path, digest and schema.

    A numpy dataset, one array per column: MLflow's pandas dataset infers its schema by testing
    every cell in Python (over two minutes at 10M rows); this one reads only dtypes and shapes.
    MLflow keeps dataset digests short (36 characters at most); the full sha256 is a tag.
    """
    matrix = dataset.features.to_numpy()
    columns = {name: matrix[:, position] for position, name in enumerate(dataset.features.columns)}
    with warnings.catch_warnings():
        # Harmless: the local source resolves "in multiple ways" (both the same class).
        warnings.simplefilter("ignore", UserWarning)
        mlflow.log_input(
            mlflow.data.from_numpy(
                columns,
                source=str(dataset.path),
                targets=dataset.labels,
                name=dataset.path.name,
                digest=digest[:16],
            ),
            context="training",
        )


def _fit_with_autolog(
    features: pd.DataFrame, labels: np.ndarray, parts: Split, params: TrainParams
) -> xgb.Booster:
    # Autolog records the per-round train/validation log loss. It must run inside the step's
    # run: outside one, it ends the run it resumed. The model (with signature and example) and
    # the feature importance (of the trees kept, not of every round tried) are logged by hand.
    # Autolog also logs xgb.train's arguments as params, which collides with the values
    # `mlflow run` logged as typed ("0" vs "None", ".05" vs "0.05") and makes it drop them all,
    # so the booster params are logged here first, under names no parameter uses.
    mlflow.log_params(
        {key: value for key, value in params.booster_params().items() if key not in asdict(params)}
    )
    train = distinct_rows(features.iloc[parts.train])
    validation = distinct_rows(features.iloc[parts.validation])
    if train.inverse is not None:
        logger.info("training on %d distinct rows, weighted by count", len(train.rows))
    # The rows XGBoost is given: the distinct ones when repeats were merged (train_rows counts all).
    mlflow.log_metrics({"fit_rows": len(train.rows)})
    mlflow.xgboost.autolog(log_models=False, log_datasets=False, importance_types=[], silent=True)
    try:
        return fit(
            train.rows,
            train.labels(labels[parts.train]),
            validation.rows,
            validation.labels(labels[parts.validation]),
            params,
            w_train=train.weights,
            w_valid=validation.weights,
        )
    finally:
        mlflow.xgboost.autolog(disable=True)


def _count(rows: slice | np.ndarray, labels: np.ndarray) -> int:
    return len(labels[rows])


def _importance(booster: xgb.Booster) -> dict[str, dict[str, float]]:
    return {kind: booster.get_score(importance_type=kind) for kind in ("gain", "weight")}


def _log_predictions_artifact(path: Path) -> None:
    """Log the CSV as ``predictions/predictions.csv`` whatever the local file is called."""
    if path.name == config.PREDICTIONS_FILE_NAME:
        mlflow.log_artifact(str(path), artifact_path=config.PREDICTIONS_ARTIFACT_DIR)
        return
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / config.PREDICTIONS_FILE_NAME
        shutil.copyfile(path, copy)
        mlflow.log_artifact(str(copy), artifact_path=config.PREDICTIONS_ARTIFACT_DIR)
