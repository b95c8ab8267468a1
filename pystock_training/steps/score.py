"""The score step: predict a table with a registered model, batch by batch, into a CSV.

The batch scorer downstream of the registry. It reads the table a batch at a time
(``batches.open_features``), predicts each batch, and appends ``y_proba`` and ``y_pred`` (and
``y_true`` when the table carries labels) to the output, so memory does not grow with the rows.
When labels are present, the metrics ``evaluate_model`` logs for the model are computed at the
end from running counts per distinct (probability, label): a model of 14 binary flags gives at
most 16,384 distinct probabilities, so the counts stay small however many rows pass.

``models:/<name>@<alias>`` is resolved to its version number once, before anything is read, and
that version is loaded and recorded: an alias that moves during the run changes nothing.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pystock_training import config
from pystock_training.batches import BATCH_ROWS, Batch, FeatureTable, open_features
from pystock_training.champion import model_features as recorded_features
from pystock_training.distinct import DistinctRows, distinct_rows
from pystock_training.errors import DataError, PystockError, first_line
from pystock_training.handoff import atomic_write
from pystock_training.metrics import Predictions, grouped_metrics
from pystock_training.params import DEFAULT_MODEL_URI, check_params
from pystock_training.tracking import StepTimer, log_missing_params, step_run

logger = logging.getLogger(__name__)

RUN_NAME: Final = "score"
# Score-run tags beside config's (pystock.model_uri, pystock.model_version, pystock.data_*).
TAG_MODEL_NAME: Final = "pystock.model_name"
TAG_OUTPUT_FILE: Final = "pystock.output_file"
TAG_HAS_LABELS: Final = "pystock.has_labels"
TAG_METRICS_SKIPPED: Final = "pystock.metrics_skipped"

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


@dataclass(frozen=True)
class ResolvedModel:
    """The model a score run loads.

    Attributes:
        uri: What is loaded: ``models:/<name>/<version>`` for a registry alias, else as given.
        name: Registered model name, or None for a URI outside the registry.
        version: Registered version number, or None when the URI names none.
    """

    uri: str
    name: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class ScoreResult:
    """What a score run made."""

    run_id: str
    output_file: Path
    rows: int
    model: ResolvedModel
    has_labels: bool
    metrics: dict[str, float] = field(default_factory=dict)


def score(
    *,
    input_file: str | Path,
    output_file: str | Path,
    model_uri: str = DEFAULT_MODEL_URI,
    threshold: float = config.THRESHOLD,
    batch_rows: int = BATCH_ROWS,
) -> ScoreResult:
    """Score every row of ``input_file`` with the model into ``output_file``, and log the run.

    The output CSV has one row per input row, in input order: ``y_proba`` (P(up)), ``y_pred``
    (1 when ``y_proba >= threshold``) and, when the input has a label column, ``y_true``. It is
    written atomically: on any failure neither it nor a temp file is left. With labels, the run
    gets the model metrics ``evaluate_model`` logs (``config.METRIC_NAMES``) at ``threshold``.

    Raises:
        DataError: The input is missing or breaks the data contract, or the output path is unusable.
        PystockError: Bad threshold, or the model cannot be resolved, read or used.
    """
    timer = StepTimer()
    with step_run(RUN_NAME) as run:
        # Under `mlflow run` the run was created with a random name.
        mlflow.set_tag("mlflow.runName", RUN_NAME)
        log_missing_params(
            run,
            {"input_file": input_file, "output_file": output_file, "model_uri": model_uri}
            | {"threshold": threshold},
        )
        check_params({"threshold": threshold})
        input_path, output_path = check_paths(input_file, output_file)
        with timer.phase("load_model"):
            model = resolve_model(model_uri)
            tags = {config.TAG_MODEL_URI: model.uri}
            if model.name:
                tags[TAG_MODEL_NAME] = model.name
            if model.version:
                tags[config.TAG_MODEL_VERSION] = model.version
            mlflow.set_tags(tags)
            features = model_features(model.uri)
            predictor = _load(model.uri)
        logger.info(
            "scoring %s with %s (%d features) into %s", input_path, model.uri, len(features), output_path
        )
        with open_features(input_path, len(features), batch_rows) as table:
            mlflow.set_tag(TAG_HAS_LABELS, str(table.has_labels).lower())
            # Everything, the run's records included, happens before the rename: an output file
            # exists only for a run that recorded how it was made.
            with atomic_write(output_path) as handle:
                with timer.phase("score"):
                    writer = _OutputWriter(handle, output_path, table.has_labels)
                    counts, predicted_up = _score_table(
                        table, writer, predictor, model.uri, features, threshold
                    )
                with timer.phase("metrics"):
                    metrics, skipped = _metrics(counts, threshold) if table.has_labels else ({}, "")
                rows = table.rows
                mlflow.set_tags(
                    {
                        config.TAG_DATA_FILE: str(input_path),
                        config.TAG_DATA_DIGEST: table.digest.sha256,
                        config.TAG_DATA_SIZE: str(table.digest.size),
                        config.TAG_DATA_ROWS: str(rows),
                        TAG_OUTPUT_FILE: str(output_path),
                    }
                    | ({TAG_METRICS_SKIPPED: skipped} if skipped else {})
                )
                mlflow.log_metrics(metrics | {"rows": rows, "predicted_up_rate": predicted_up / rows})
                timer.log()
        logger.info(
            "scored %d rows with %s into %s%s",
            rows,
            model.uri,
            output_path,
            f" (roc_auc {metrics['roc_auc']:.4f} at threshold {threshold:g})" if metrics else "",
        )
        return ScoreResult(run.info.run_id, output_path, rows, model, table.has_labels, metrics)


def _score_table(
    table: FeatureTable,
    writer: _OutputWriter,
    predictor: Any,
    uri: str,
    features: list[str],
    threshold: float,
) -> tuple[LabelCounts, int]:
    """Predict and write every batch; the label counts and how many rows were predicted up."""
    counts = LabelCounts()
    predicted_up = 0
    for batch in table.batches():
        distinct, proba = _predict(predictor, uri, features, batch, table.path)
        y_proba = distinct.expand(proba)
        y_pred = (y_proba >= threshold).astype(np.int8)
        predicted_up += int(y_pred.sum())
        writer.write(y_proba, y_pred, batch.labels)
        if batch.labels is not None:
            counts.add(proba, batch.labels, distinct.inverse)
    writer.close()
    return counts, predicted_up


def check_paths(input_file: str | Path, output_file: str | Path) -> tuple[Path, Path]:
    """Resolve both paths against the working directory and check them before any work.

    Under ``mlflow run`` the working directory is the project directory, as for ``data_file``.

    Raises:
        DataError: The input is missing; the output is a directory, its folder is missing or not
            writable, or it is the input itself.
        PystockError: A path is empty.
    """
    if not str(input_file):
        raise PystockError("invalid parameters: input_file must not be empty")
    if not str(output_file):
        raise PystockError("invalid parameters: output_file must not be empty")
    given_input, given_output = Path(input_file).expanduser(), Path(output_file).expanduser()
    input_path, output_path = given_input.resolve(), given_output.resolve()
    if not input_path.exists():
        raise DataError(input_path, f"no such file{_relative_hint(given_input)}")
    if output_path.is_dir():
        raise DataError(output_path, "is a directory, expected the path of the CSV to write")
    folder = output_path.parent
    if not folder.is_dir():
        raise DataError(output_path, f"its folder {folder} does not exist{_relative_hint(given_output)}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DataError(output_path, f"cannot write in its folder {folder}")
    if output_path == input_path:
        raise DataError(output_path, "is the input file; write the scores to another file")
    return input_path, output_path


def _relative_hint(given: Path) -> str:
    if given.is_absolute():
        return ""
    return f" (a relative path resolves against {Path.cwd()}, the project directory under `mlflow run`)"


def resolve_model(model_uri: str) -> ResolvedModel:
    """Pin a model URI: ``models:/<name>@<alias>`` becomes the version the alias names now.

    ``models:/<name>/<version>`` is recorded with its version; other URIs (``models:/m-<id>``,
    ``runs:/...``) are used as given.

    Raises:
        PystockError: Empty URI, or the alias or its model does not exist.
    """
    uri = model_uri.strip()
    if not uri:
        raise PystockError("invalid parameters: model_uri must not be empty")
    alias = _ALIAS_URI.match(uri)
    if alias:
        name = alias["name"]
        try:
            version = MlflowClient().get_model_version_by_alias(name, alias["alias"]).version
        except MlflowException as exc:
            raise PystockError(
                f"model {uri} not found: {first_line(exc)} (has a pipeline promoted a version yet? "
                f"or pass -P model_uri=models:/{name}/<version>)"
            ) from exc
        logger.info("%s is version %s", uri, version)
        return ResolvedModel(f"models:/{name}/{version}", name, str(version))
    pinned = _VERSION_URI.match(uri)
    if pinned:
        return ResolvedModel(uri, pinned["name"], pinned["version"])
    return ResolvedModel(uri)


def model_features(uri: str) -> list[str]:
    """The model's feature names, in order: its ``features`` metadata, else its signature's inputs.

    Raises:
        PystockError: The model cannot be read or names no features.
    """
    try:
        info = mlflow.models.get_model_info(uri)
    except (MlflowException, OSError) as exc:
        raise PystockError(f"model {uri} could not be read: {first_line(exc)}") from exc
    names = recorded_features(info)
    if not names:
        raise PystockError(
            f"model {uri} names no features (no {config.FEATURES_KEY!r} metadata, no named input signature)"
        )
    return names


def _load(uri: str) -> Any:
    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError, ImportError) as exc:
        raise PystockError(f"model {uri} could not be loaded: {first_line(exc)}") from exc


def _predict(
    predictor: Any, uri: str, features: list[str], batch: Batch, source: Path
) -> tuple[DistinctRows, np.ndarray]:
    """The model's probabilities for a batch: one per distinct row, and the rows they stand for.

    Whole-number features (the up/down flags) go to the model as int8 and each distinct row
    once: a batch of half a million rows holds at most 16,384 of them.
    """
    matrix = batch.features
    with np.errstate(invalid="ignore"):  # NaN casts to junk and then compares unequal
        compact = matrix.astype(np.int8)
    if np.array_equal(compact, matrix):
        rows = distinct_rows(pd.DataFrame(compact, columns=features, copy=False))
    else:
        rows = DistinctRows(pd.DataFrame(matrix, columns=features, copy=False), None)
    try:
        proba = np.asarray(predictor.predict(rows.rows), dtype=np.float64).ravel()
    except Exception as exc:
        # A schema-enforcement error runs to many lines; the first says what it is.
        raise PystockError(
            f"model {uri} could not score {source} (rows {batch.start + 1}-{batch.start + len(matrix)}): "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from exc
    if len(proba) != len(rows.rows) or not (
        np.isfinite(proba).all() and proba.min() >= 0 and proba.max() <= 1
    ):
        raise PystockError(f"model {uri} did not return one probability in [0, 1] per row")
    return rows, proba


class LabelCounts:
    """How many rows had each (probability, label): the metrics' input in memory that stays small.

    Every metric ``evaluate_model`` logs is a weighted sum over rows, so these counts give the
    same values as the rows themselves (``metrics.group_predictions`` merges rows the same way).
    """

    def __init__(self) -> None:
        self.proba = np.empty(0, dtype=np.float64)
        self.counts = np.empty((0, 2), dtype=np.int64)  # rows with label 0, with label 1

    def add(self, proba: np.ndarray, labels: np.ndarray, inverse: np.ndarray | None = None) -> None:
        """Count a batch: ``proba[inverse[i]]`` is row i's probability (``proba[i]`` without ``inverse``)."""
        index = np.arange(len(labels)) if inverse is None else inverse
        batch = np.bincount(index * 2 + labels, minlength=2 * len(proba)).reshape(-1, 2)
        values, where = np.unique(np.concatenate([self.proba, proba]), return_inverse=True)
        merged = np.zeros((len(values), 2), dtype=np.int64)
        np.add.at(merged, where, np.concatenate([self.counts, batch]))
        self.proba, self.counts = values, merged

    def predictions(self, threshold: float) -> Predictions:
        """The counted rows, one per (probability, label) seen, weighted by their count."""
        weight = self.counts.ravel()
        present = weight > 0
        y_true = np.tile(np.array([0, 1], dtype=np.int8), len(self.proba))[present]
        y_proba = np.repeat(self.proba, 2)[present]
        return Predictions(y_true, (y_proba >= threshold).astype(np.int8), y_proba, weight[present])


def _metrics(counts: LabelCounts, threshold: float) -> tuple[dict[str, float], str]:
    """The model metrics at ``threshold``, or none and why (a single class has no ROC AUC)."""
    try:
        return grouped_metrics(counts.predictions(threshold)), ""
    except ValueError as exc:
        logger.warning("no metrics: %s", exc)
        return {}, str(exc)


class _OutputWriter:
    """Appends scored batches to the output CSV; a failed write names the output file."""

    def __init__(self, handle: BinaryIO, path: Path, has_labels: bool) -> None:
        columns = [("y_proba", pa.float64()), ("y_pred", pa.int8())]
        self._schema = pa.schema(columns + ([("y_true", pa.int8())] if has_labels else []))
        self._path = path
        # pyarrow quotes the names in a header it writes; a plain header reads the same everywhere.
        header = ",".join(self._schema.names).encode() + b"\n"
        self._guard(lambda: handle.write(header))
        options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
        self._writer = self._guard(lambda: pa_csv.CSVWriter(handle, self._schema, write_options=options))

    def write(self, y_proba: np.ndarray, y_pred: np.ndarray, y_true: np.ndarray | None) -> None:
        arrays = [pa.array(y_proba), pa.array(y_pred)] + ([pa.array(y_true)] if y_true is not None else [])
        self._guard(lambda: self._writer.write_batch(pa.record_batch(arrays, schema=self._schema)))

    def close(self) -> None:
        self._guard(self._writer.close)

    def _guard(self, action: Any) -> Any:
        try:
            return action()
        except OSError as exc:
            raise DataError(self._path, f"cannot be written ({exc.strerror or first_line(exc)})") from exc
