"""The train_model step: load and split the data, fit, predict, score the champion, log the model.

It imports xgboost but not sklearn's metrics or matplotlib, which only evaluate_model needs:
each step is its own process, and what it imports is start-up time and memory it pays.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

from pystock_training import config, dask_engine
from pystock_training.champion import (
    Champion,
    clean_rows,
    clean_start,
    contract_change,
    find_champion,
    model_features,
    score_champion,
)
from pystock_training.cluster import cluster_failures, dask_client, n_workers_of, run_bounded
from pystock_training.data import Dataset, Split, feature_names, load_dataset, split_rows
from pystock_training.data.parts import load_parts
from pystock_training.digest import FileDigest
from pystock_training.distinct import distinct_rows
from pystock_training.errors import DataError, PystockError, first_line
from pystock_training.handoff import predictions_sha256, write_predictions
from pystock_training.model import fit, log_model, predict_proba
from pystock_training.params import TrainParams, check_params
from pystock_training.provenance import code_version
from pystock_training.scratch import out_of_space_reported, predictions_path
from pystock_training.sources import is_partitioned, list_parts, source_name
from pystock_training.tracking import StepTimer, log_missing_params, step_run

if TYPE_CHECKING:
    from distributed import Client

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

    With ``engine=dask`` the table stays on a Dask cluster, part by part (``dask_engine``), and
    the predictions are a folder of CSV parts; the cluster is reached (or an embedded one
    started) before the run is created.

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
    with ExitStack() as cluster:
        # Connected before the run exists: an unreachable scheduler fails in one line, with no
        # run to end. The embedded cluster's workers start while the run is set up.
        client = (
            cluster.enter_context(dask_client(params.dask_scheduler)) if params.engine == "dask" else None
        )
        with (
            step_run("train_model") as run,
            predictions_path(params.predictions_file or None) as path,
            # Inside the run, so its error tag (which the driver reports) is the one line too.
            out_of_space_reported(),
        ):
            log_missing_params(run, asdict(params))
            # model_name too: run on its own, the step would otherwise train for nothing, as
            # register cannot take the name.
            check_params(asdict(params))
            with timer.phase("champion"):
                # Looked up first: its file's size is the prefix whose digest the load keeps.
                champion = find_champion(params.model_name)
            mlflow.set_tag(config.TAG_ENGINE, params.engine)
            if client is not None:
                with cluster_failures(client):
                    return _train_on_dask(client, params, run, path, champion, timer)
            return _train_here(params, run, path, champion, timer)


def _train_here(
    params: TrainParams, run: Run, path: Path, champion: Champion | None, timer: StepTimer
) -> TrainResult:
    """The local engine: the whole table in this process."""
    trained_on = champion.trained_on if champion else None
    with timer.phase("load"):
        if is_partitioned(params.data_file):
            dataset = load_parts(params.data_file)
        else:
            dataset = load_dataset(
                params.data_file,
                prefix_sizes=(trained_on.data_size,) if trained_on and trained_on.data_size else (),
            )
    digest = dataset.digest.sha256
    _check_digest(dataset.path, digest, params.data_digest)
    _tag_data(dataset.path, dataset.digest, dataset.n_rows)
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


def _train_on_dask(
    client: Client, params: TrainParams, run: Run, path: Path, champion: Champion | None, timer: StepTimer
) -> TrainResult:
    """The dask engine (dask_engine.py): the table stays on the workers, part by part."""
    n_workers = n_workers_of(client)
    mlflow.set_tags(
        {config.TAG_DASK_WORKERS: str(n_workers), config.TAG_DASK_SCHEDULER: str(client.scheduler.address)}
    )
    source = source_name(params.data_file)
    with timer.phase("load"):
        parts = list_parts(params.data_file)
        scans = dask_engine.scan(client, parts)
    digest = dask_engine.table_digest(scans)
    _check_digest(source, digest.sha256, params.data_digest)
    layout = dask_engine.layout_of(str(source), parts, scans, params.test_size)
    _tag_data(source, digest, layout.n_rows)
    _log_parts_input(source, digest.sha256, scans[0].n_features, layout)

    space = dask_engine.code_space(scans)
    with timer.phase("fit"):
        if space is not None:
            train, validation = dask_engine.merged_rows(client, layout, scans, space)
            logger.info(
                "training on %d distinct rows of %d, weighted by count", len(train.rows), train.n_rows
            )
            _check_classes(source, "train", train.positives, train.n_rows)
            booster = _fit_logged(
                (train.rows, train.labels, train.weights),
                (validation.rows, validation.labels, validation.weights),
                params,
            )
            counts = (train.n_rows, train.positives, validation.n_rows)
        else:
            _log_booster_params(params)
            booster, history, counts = dask_engine.train_on_cluster(
                client, layout, scans[0].n_features, params.booster_params(), params
            )
            _check_classes(source, "train", counts[1], counts[0])
            _log_history(run.info.run_id, history)
            mlflow.log_metrics({"fit_rows": counts[0]})
    train_rows, train_positives, validation_rows = counts
    prior = train_positives / train_rows

    with timer.phase("champion"):
        task = dask_engine.PredictTask(booster, None, layout.n_rows, params.threshold, prior)
        scored_version, status, rows_compared = "", "none", 0
        if champion is not None:
            task, status, rows_compared = _champion_task(champion, task, digest, layout, booster)
            scored_version = champion.version
    mlflow.set_tags(
        {
            config.TAG_CHAMPION_VERSION: scored_version,
            config.TAG_CHAMPION_STATUS: status[:5000],
            config.TAG_CHAMPION_ROWS_COMPARED: str(rows_compared),
        }
    )
    with timer.phase("predict"):
        test_rows, test_positives, example = _write_prediction_parts(client, layout, task, path)
    _check_classes(source, "test", test_positives, test_rows)
    with timer.phase("write_predictions"):
        mlflow.set_tag(config.TAG_PREDICTIONS_SHA256, predictions_sha256(path))
        _log_predictions_artifact(path)
    with timer.phase("log_model"):
        mlflow.log_dict(_importance(booster), "feature_importance.json")
        model_info = log_model(booster, config.MODEL_ARTIFACT_NAME, example)
    mlflow.log_metrics(
        {
            "train_rows": train_rows,
            "validation_rows": validation_rows,
            "test_rows": test_rows,
            "training_prior": prior,
            "num_trees": booster.num_boosted_rounds(),
        }
    )
    mlflow.set_tags({config.TAG_MODEL_URI: model_info.model_uri, config.TAG_PREDICTIONS_FILE: str(path)})
    timer.log()
    logger.info(
        "trained %s on %d rows of %d parts with %d Dask workers; predictions in %s",
        model_info.model_uri,
        train_rows,
        len(parts),
        n_workers,
        path,
    )
    return TrainResult(run.info.run_id, model_info.model_uri, path, digest.sha256)


def _check_classes(source: Path | str, part: str, positives: int, rows: int) -> None:
    if positives in (0, rows):
        raise DataError(
            source,
            f"the {part} part of the time split holds only label {int(positives > 0)}; "
            "it needs both classes (use more rows or another test_size)",
        )


def _champion_task(
    champion: Champion,
    task: dask_engine.PredictTask,
    digest: FileDigest,
    layout: dask_engine.Layout,
    booster: xgb.Booster,
) -> tuple[dask_engine.PredictTask, str, int]:
    """The predict task, with the champion's booster when it can be compared; its status; rows compared."""
    found = model_features(_champion_info(champion))
    expected = list(booster.feature_names or [])
    if found != expected:
        return task, f"{config.INCOMPATIBLE}: {contract_change(found, expected)}", 0
    start, why_not = clean_start(champion.trained_on, digest, layout.n_rows)
    compared = 0 if start is None else layout.n_rows - max(start, layout.fit_end)
    if compared < config.MIN_ROWS_COMPARED:
        status = (
            f"not compared: only {compared} of {layout.n_rows - layout.fit_end} test rows are rows it never "
            f"trained on (at least {config.MIN_ROWS_COMPARED} needed){': ' + why_not if why_not else ''}"
        )
        logger.warning("champion version %s %s", champion.version, status)
        return task, status, 0
    try:
        champion_booster = mlflow.xgboost.load_model(champion.uri)
    except Exception as exc:
        # The same rule as the local engine: an unreachable champion is an error, never a skip.
        raise PystockError(
            f"champion {champion.uri} could not be loaded: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    logger.info(
        "champion version %s is scored on the %d test rows it never trained on", champion.version, compared
    )
    return replace(task, champion=champion_booster, clean_start=start), "scored", compared


def _champion_info(champion: Champion) -> ModelInfo:
    try:
        return mlflow.models.get_model_info(champion.uri)
    except MlflowException as exc:
        raise PystockError(f"champion {champion.uri} could not be read: {first_line(exc)}") from exc


def _write_prediction_parts(
    client: Client, layout: dask_engine.Layout, task: dask_engine.PredictTask, path: Path
) -> tuple[int, int, pd.DataFrame]:
    """Predict each part's test rows on the workers and write them as ``path/part-NNNNN.csv``.

    The parts go to a hidden folder beside ``path`` that is renamed into place when all are
    written: a reader sees no folder or the whole of it. Returns the test rows, their
    positives and the first test rows as the model's input example.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        indices = layout.overlapping(layout.fit_end, layout.n_rows)
        shared = client.scatter(task, broadcast=True)
        calls = ((layout.parts[index], layout.offsets[index]) for index in indices)
        rows = positives = 0
        example = None
        for position, predicted in run_bounded(
            client, dask_engine.predict_part, calls, test_start=layout.fit_end, task=shared
        ):
            (staging / f"part-{position:05d}.csv").write_bytes(predicted.csv)
            rows += predicted.rows
            positives += predicted.positives
            if position == 0:
                example = predicted.example
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    assert example is not None  # the test part is never empty (time_split_bounds)
    return rows, positives, example


def _log_history(run_id: str, history: dict[str, dict[str, list[float]]]) -> None:
    """The per-round losses of ``xgboost.dask.train``, named and stepped as autolog names them locally."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{dataset}-{name}", float(value), now, step)
        for dataset, by_name in history.items()
        for name, values in by_name.items()
        for step, value in enumerate(values)
    ]
    client = MlflowClient()
    for start in range(0, len(metrics), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + _METRICS_PER_BATCH])


def _log_parts_input(source: Path | str, digest: str, n_features: int, layout: dask_engine.Layout) -> None:
    """Record the parts as the run's input, by reference: where they are, their digest and schema."""
    schema = Schema(
        [ColSpec("float", name) for name in feature_names(n_features)] + [ColSpec("integer", "label")]
    )
    dataset = MetaDataset(
        source=_dataset_source(source),
        name=_short_name(source),
        digest=digest[:16],
        schema=schema,
    )
    mlflow.log_input(dataset, context="training", tags={"parts": str(len(layout.parts))})


def _dataset_source(source: Path | str) -> DatasetSource:
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        # Harmless: a local source resolves "in multiple ways" (both the same class).
        warnings.simplefilter("ignore", UserWarning)
        return resolve_dataset_source(str(source))


# MLflow's limit on metrics per log_batch call.
_METRICS_PER_BATCH = 1000


def _check_digest(source: Path | str, digest: str, expected: str) -> None:
    if expected and digest != expected:
        raise DataError(
            source,
            f"changed while the pipeline ran: it now hashes to {digest[:12]}, the run key was "
            f"computed from {expected[:12]}; re-run when the file is no longer being written",
        )


def _tag_data(source: Path | str, digest: FileDigest, n_rows: int) -> None:
    mlflow.set_tags(
        {
            config.TAG_DATA_FILE: str(source),
            config.TAG_DATA_DIGEST: digest.sha256,
            config.TAG_DATA_SIZE: str(digest.size),
            config.TAG_DATA_ROWS: str(n_rows),
            config.TAG_CODE_VERSION: code_version(),
        }
    )


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
                name=_short_name(dataset.path),
                digest=digest[:16],
            ),
            context="training",
        )


def _fit_with_autolog(
    features: pd.DataFrame, labels: np.ndarray, parts: Split, params: TrainParams
) -> xgb.Booster:
    train = distinct_rows(features.iloc[parts.train])
    validation = distinct_rows(features.iloc[parts.validation])
    if train.inverse is not None:
        logger.info("training on %d distinct rows, weighted by count", len(train.rows))
    return _fit_logged(
        (train.rows, train.labels(labels[parts.train]), train.weights),
        (validation.rows, validation.labels(labels[parts.validation]), validation.weights),
        params,
    )


Rows = tuple[pd.DataFrame, np.ndarray, np.ndarray | None]


def _fit_logged(train: Rows, validation: Rows, params: TrainParams) -> xgb.Booster:
    """``model.fit`` on (features, labels, weights) under autolog, with the booster params logged."""
    # Autolog records the per-round train/validation log loss. It must run inside the step's
    # run: outside one, it ends the run it resumed. The model (with signature and example) and
    # the feature importance (of the trees kept, not of every round tried) are logged by hand.
    _log_booster_params(params)
    # The rows XGBoost is given: the distinct ones when repeats were merged (train_rows counts all).
    mlflow.log_metrics({"fit_rows": len(train[0])})
    mlflow.xgboost.autolog(log_models=False, log_datasets=False, importance_types=[], silent=True)
    try:
        return fit(
            train[0], train[1], validation[0], validation[1], params, w_train=train[2], w_valid=validation[2]
        )
    finally:
        mlflow.xgboost.autolog(disable=True)


def _log_booster_params(params: TrainParams) -> None:
    # Autolog also logs xgb.train's arguments as params, which collides with the values
    # `mlflow run` logged as typed ("0" vs "None", ".05" vs "0.05") and makes it drop them all,
    # so the booster params are logged here first, under names no parameter uses.
    mlflow.log_params(
        {key: value for key, value in params.booster_params().items() if key not in asdict(params)}
    )


def _short_name(source: Path | str) -> str:
    return str(source).rstrip("/").rsplit("/", 1)[-1] or str(source)


def _count(rows: slice | np.ndarray, labels: np.ndarray) -> int:
    return len(labels[rows])


def _importance(booster: xgb.Booster) -> dict[str, dict[str, float]]:
    return {kind: booster.get_score(importance_type=kind) for kind in ("gain", "weight")}


def _log_predictions_artifact(path: Path) -> None:
    """Log the CSV as ``predictions/predictions.csv`` whatever the local file is called.

    A folder of parts is logged as ``predictions/part-*.csv``.
    """
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=config.PREDICTIONS_ARTIFACT_DIR)
        return
    if path.name == config.PREDICTIONS_FILE_NAME:
        mlflow.log_artifact(str(path), artifact_path=config.PREDICTIONS_ARTIFACT_DIR)
        return
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / config.PREDICTIONS_FILE_NAME
        shutil.copyfile(path, copy)
        mlflow.log_artifact(str(copy), artifact_path=config.PREDICTIONS_ARTIFACT_DIR)
