"""The three pipeline steps: train_model, evaluate_model and register_model.

Each opens its own run (resumed from ``MLFLOW_RUN_ID`` under ``mlflow run``), logs what it made,
and returns it, so tests call these functions directly against a real SQLite store.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from pystock_training import config
from pystock_training.champion import Holdout, current_champion, score_champion
from pystock_training.data import Dataset, Split, load_dataset, split_rows
from pystock_training.distinct import distinct_rows
from pystock_training.errors import DataError, PystockError
from pystock_training.gate import (
    BootstrapCI,
    ChampionComparison,
    Check,
    GateDecision,
    decide,
    oriented_diff,
    paired_bootstrap_ci,
    uses_probabilities,
)
from pystock_training.handoff import read_predictions, write_predictions
from pystock_training.metrics import METRIC_NAMES, classification_metrics, evaluate_predictions, flatten
from pystock_training.model import fit, model_requirements, predict_proba
from pystock_training.params import (
    GateParams,
    TrainParams,
    check_gate_metric,
    check_register_params,
    check_train_params,
    default_predictions_file,
)
from pystock_training.plots import evaluation_figures
from pystock_training.provenance import code_version, file_digest
from pystock_training.report import evaluation_report
from pystock_training.tracking import StepTimer, log_missing_params, step_run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What train_model made."""

    run_id: str
    model_uri: str
    predictions_file: Path
    data_digest: str


def train_model(
    *,
    data_file: str | Path = config.DATA_FILE,
    model_name: str = config.MODEL_NAME,
    predictions_file: str | Path | None = None,
    split: str = config.SPLIT,
    test_size: float = config.TEST_SIZE,
    random_state: int = config.RANDOM_STATE,
    threshold: float = config.THRESHOLD,
    num_boost_round: int = config.NUM_BOOST_ROUND,
    max_depth: int = config.MAX_DEPTH,
    learning_rate: float = config.LEARNING_RATE,
    early_stopping_rounds: int = config.EARLY_STOPPING_ROUNDS,
) -> TrainResult:
    """Load and split the data, fit the classifier, log the model and write the test predictions.

    The current ``model_name@champion``, if its inputs fit, is scored on the same test rows and
    its probabilities travel in the predictions CSV for the gate.

    Raises:
        DataError: The data file breaks the data contract.
        PystockError: A parameter is out of range.
    """
    params = TrainParams(num_boost_round, max_depth, learning_rate, early_stopping_rounds, random_state)
    timer = StepTimer()
    with step_run("train_model") as run:
        log_missing_params(
            run,
            {"data_file": data_file, "model_name": model_name, "predictions_file": predictions_file or ""}
            | {"split": split}
            | {"test_size": test_size, "threshold": threshold}
            | asdict(params),
        )
        check_train_params(split, test_size, threshold, params)
        with timer.phase("load"):
            dataset = load_dataset(data_file)
        with timer.phase("digest"):
            digest = file_digest(dataset.path)
        mlflow.set_tags(
            {
                config.TAG_DATA_FILE: str(dataset.path),
                config.TAG_DATA_DIGEST: digest,
                config.TAG_CODE_VERSION: code_version(),
            }
        )
        _log_dataset_input(dataset, digest)
        parts = split_rows(
            dataset.labels, split=split, test_size=test_size, random_state=random_state, source=dataset.path
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
        holdout = Holdout(digest, split, test_size, random_state)
        with timer.phase("champion"):
            champion = score_champion(model_name, test_rows.rows, holdout)
        mlflow.set_tags(
            {config.TAG_CHAMPION_VERSION: champion.version or "", config.TAG_CHAMPION_STATUS: champion.status}
        )
        champion_proba = None if champion.proba is None else test_rows.expand(champion.proba)
        path = Path(predictions_file) if predictions_file else default_predictions_file(run.info.run_id)
        with timer.phase("write_predictions"):
            write_predictions(path, y_test, y_proba, threshold, prior, champion_proba=champion_proba)
            _log_predictions_artifact(path)

        with timer.phase("log_model"):
            # float64 in the signature: a double column accepts the float64 frames pandas reads
            # by default as well as float32 and ints; a float32 one refuses float64 input.
            example = x_test.iloc[: config.EXAMPLE_ROWS].astype(np.float64)
            mlflow.log_dict(_importance(booster), "feature_importance.json")
            model_info = mlflow.xgboost.log_model(
                booster,
                name=config.MODEL_ARTIFACT_NAME,
                signature=infer_signature(example, y_proba[: config.EXAMPLE_ROWS]),
                input_example=example,
                # Naming the requirements skips MLflow's inference, which re-imports the model
                # in a subprocess (about 3 s a run); these are what that inference finds.
                pip_requirements=model_requirements(),
            )
        mlflow.log_metrics(
            {
                "train_rows": _count(parts.train, labels),
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
            _count(parts.train, labels),
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
    mlflow.log_metrics({"train_distinct_rows": len(train.rows)})
    mlflow.xgboost.autolog(log_models=False, log_datasets=False, importance_types=[], silent=True)
    try:
        return fit(
            train.rows,
            train.labels(labels[parts.train]),
            validation.rows,
            validation.labels(labels[parts.validation]),
            params,
            w_train=train.weights(),
            w_valid=validation.weights(),
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


def evaluate_model(
    *, predictions_file: str | Path, gate_metric: str = config.GATE_METRIC
) -> dict[str, float]:
    """Score the test predictions against the naive baseline and, when present, the champion.

    Logs every metric for the model (``roc_auc``), the baseline (``baseline_roc_auc``), the lift
    over it (``lift_roc_auc``) and the champion on the same rows (``champion_roc_auc``), plus the
    paired bootstrap CI of the gate metric's difference with the champion (``diff_roc_auc``,
    ``diff_roc_auc_ci_low``, ``diff_roc_auc_ci_high``), plots, ``evaluation.json`` and a report.

    Returns:
        The logged metrics.

    Raises:
        DataError: The predictions file is missing or malformed.
        PystockError: Unknown gate metric.
    """
    timer = StepTimer()
    with step_run("evaluate_model") as run:
        log_missing_params(run, {"predictions_file": predictions_file, "gate_metric": gate_metric})
        try:
            check_gate_metric(gate_metric)
        except ValueError as exc:
            raise PystockError(f"invalid parameters: {exc}") from exc
        with timer.phase("read_predictions"):
            frame = read_predictions(predictions_file)
        y_true = frame["y_test"].to_numpy()
        y_pred = frame["y_pred"].to_numpy()
        y_proba = frame["y_proba"].to_numpy(dtype=np.float64)
        baseline_proba = frame["baseline_proba"].to_numpy(dtype=np.float64)
        has_champion = "champion_proba" in frame.columns
        with timer.phase("metrics"):
            try:
                results = evaluate_predictions(y_true, y_pred, y_proba, float(baseline_proba[0]))
                comparison = None
                if has_champion:
                    champion_pred = frame["champion_pred"].to_numpy()
                    champion_proba = frame["champion_proba"].to_numpy(dtype=np.float64)
                    results["champion"] = classification_metrics(y_true, champion_pred, champion_proba)
                    candidate, champion = (
                        (y_proba, champion_proba)
                        if uses_probabilities(gate_metric)
                        else (y_pred, champion_pred)
                    )
                    point = oriented_diff(
                        gate_metric, results["model"][gate_metric], results["champion"][gate_metric]
                    )
                    comparison = paired_bootstrap_ci(y_true, candidate, champion, gate_metric, point=point)
            except ValueError as exc:
                raise DataError(predictions_file, str(exc)) from exc
        flat = flatten(results)
        if comparison is not None:
            flat |= {
                f"diff_{gate_metric}": comparison.diff,
                f"diff_{gate_metric}_ci_low": comparison.low,
                f"diff_{gate_metric}_ci_high": comparison.high,
            }
        mlflow.log_metrics(flat)
        with timer.phase("plots"):
            for name, figure in evaluation_figures(y_true, y_pred, y_proba, baseline_proba).items():
                mlflow.log_figure(figure, f"plots/{name}")
        mlflow.log_dict(
            results | {"champion_comparison": asdict(comparison) if comparison else None}, "evaluation.json"
        )
        mlflow.log_text(evaluation_report(results, len(frame), comparison), "evaluation_report.md")
        timer.log()
        logger.info(
            "%s %.4f (baseline %.4f%s) on %d test rows",
            gate_metric,
            flat[gate_metric],
            flat[f"baseline_{gate_metric}"],
            f", champion {flat[f'champion_{gate_metric}']:.4f}, diff CI [{comparison.low:+.4f}, "
            f"{comparison.high:+.4f}]"
            if comparison
            else "",
            len(frame),
        )
        return flat


@dataclass(frozen=True)
class RegisterResult:
    """What register_model made and decided."""

    version: ModelVersion
    decision: GateDecision
    summary: str

    @property
    def promoted(self) -> bool:
        """Whether the version became champion."""
        return self.decision.promote


def register_model(
    *,
    train_run_id: str,
    evaluate_run_id: str,
    model_name: str = config.MODEL_NAME,
    model_uri: str = "",
    gate_metric: str = config.GATE_METRIC,
    min_score: float = config.MIN_SCORE,
    max_regression: float = config.MAX_REGRESSION,
) -> RegisterResult:
    """Register the train run's model as ``challenger``; move ``champion`` only if it passes the gate.

    Every trained model becomes a version. The gate (pystock_training/gate.py) reads the evaluate
    run's metrics and CI and the serving check of the registered version. ``champion`` moves by
    compare-and-set: only if it still points at the version the candidate was compared with.

    Raises:
        PystockError: The runs or the model cannot be found, or the evaluate run lacks the metrics.
    """
    gate = GateParams(gate_metric, min_score, max_regression)
    timer = StepTimer()
    with step_run("register_model") as run:
        log_missing_params(
            run,
            {"train_run_id": train_run_id, "evaluate_run_id": evaluate_run_id, "model_name": model_name}
            | {"model_uri": model_uri}
            | asdict(gate),
        )
        check_register_params(model_name, gate)
        client = MlflowClient()
        train_run = _get_run(client, train_run_id, "train_run_id")
        metrics = _get_run(client, evaluate_run_id, "evaluate_run_id").data.metrics
        missing = [name for name in (gate_metric, f"baseline_{gate_metric}") if name not in metrics]
        if missing:
            raise PystockError(
                f"evaluate_run_id {evaluate_run_id} has no {' or '.join(missing)} metric: "
                "is it the evaluate_model run of this train run?"
            )
        model_uri = model_uri or train_run.data.tags.get(config.TAG_MODEL_URI, "")
        if not model_uri:
            raise PystockError(f"train run {train_run_id} logged no model (no {config.TAG_MODEL_URI} tag)")
        champion = _champion_comparison(train_run, evaluate_run_id, metrics, gate_metric)

        tags = {
            config.TAG_TRAIN_RUN_ID: train_run_id,
            config.TAG_EVALUATE_RUN_ID: evaluate_run_id,
            config.TAG_DATA_DIGEST: train_run.data.tags.get(config.TAG_DATA_DIGEST, "unknown"),
            config.TAG_CODE_VERSION: train_run.data.tags.get(config.TAG_CODE_VERSION, "unknown"),
        } | {
            f"{config.TAG_METRIC_PREFIX}{name}": f"{value:.6g}"
            for name, value in metrics.items()
            if name.removeprefix("baseline_").removeprefix("champion_") in METRIC_NAMES
            or name.startswith("diff_")
        }
        try:
            with timer.phase("register"):
                version = mlflow.register_model(model_uri, model_name, tags=tags)
        except MlflowException as exc:
            raise PystockError(f"cannot register {model_uri} as {model_name}: {exc.message}") from exc
        number = str(version.version)
        mlflow.set_tag(config.TAG_MODEL_VERSION, number)

        with timer.phase("serving_check"):
            serving = _serving_check(model_name, number)
        client.set_model_version_tag(model_name, number, config.TAG_SERVING_CHECK, _passed(serving.passed))
        decision = decide(gate, metrics[gate_metric], metrics[f"baseline_{gate_metric}"], champion, serving)
        if decision.promote:
            decision = _check_champion_unmoved(model_name, champion, decision)

        verdict = "promoted" if decision.promote else "rejected"
        summary = _summary(verdict, number, model_name, gate_metric, metrics, champion, decision)
        for check in decision.checks:
            client.set_model_version_tag(
                model_name, number, f"pystock.gate.{check.name}", _passed(check.passed)
            )
        client.set_model_version_tag(model_name, number, config.TAG_DECISION, verdict)
        client.set_model_version_tag(
            model_name, number, config.TAG_REASONS, "; ".join(decision.reasons)[:5000]
        )
        # Aliases move last: a crash before here leaves a version without aliases, never an
        # aliased version without its decision. challenger marks the newest trained version.
        client.set_registered_model_alias(model_name, config.ALIAS_CHALLENGER, number)
        if decision.promote:
            client.set_registered_model_alias(model_name, config.ALIAS_CHAMPION, number)
        record = {
            "verdict": verdict,
            "model_name": model_name,
            "version": number,
            "champion_compared": champion.version,
            "champion_status": champion.status,
            "champion_now": current_champion(model_name),
            "gate": asdict(gate),
            "candidate": {
                gate_metric: metrics[gate_metric],
                f"baseline_{gate_metric}": metrics[f"baseline_{gate_metric}"],
            },
            "reasons": decision.reasons,
            "summary": summary,
        } | decision.to_dict()
        mlflow.log_dict(record, config.DECISION_ARTIFACT)
        mlflow.set_tags({config.TAG_DECISION: verdict, config.TAG_SUMMARY: summary})
        timer.log()
        logger.info("%s", summary)
        return RegisterResult(client.get_model_version(model_name, number), decision, summary)


def _passed(passed: bool) -> str:
    return "passed" if passed else "failed"


def _champion_comparison(
    train_run: Run, evaluate_run_id: str, metrics: dict[str, float], gate_metric: str
) -> ChampionComparison:
    """What the train run found as champion, with the evaluate run's CI against it."""
    version = train_run.data.tags.get(config.TAG_CHAMPION_VERSION) or None
    status = train_run.data.tags.get(config.TAG_CHAMPION_STATUS, "none")
    if status != "scored":
        return ChampionComparison(version, status)
    evaluation = mlflow.artifacts.load_dict(f"runs:/{evaluate_run_id}/evaluation.json")
    comparison = evaluation.get("champion_comparison")
    if not comparison or comparison.get("metric") != gate_metric:
        raise PystockError(
            f"the evaluate run has no CI for gate_metric {gate_metric!r}; "
            "pass the same gate_metric to evaluate_model and register_model"
        )
    return ChampionComparison(
        version, status, metrics.get(f"champion_{gate_metric}"), BootstrapCI(**comparison)
    )


def _serving_check(model_name: str, version: str) -> Check:
    try:
        predictions = serving_check(model_name, version)
    except PystockError as exc:
        logger.warning("%s", exc)
        return Check("serving", False, str(exc))
    return Check(
        "serving",
        True,
        f"models:/{model_name}/{version} loaded and predicted {len(predictions)} rows",
        {"rows": len(predictions)},
    )


def _check_champion_unmoved(
    model_name: str, champion: ChampionComparison, decision: GateDecision
) -> GateDecision:
    """The compare half of compare-and-set: reject if ``champion`` moved since the comparison.

    The registry has no atomic compare-and-set on aliases; re-reading right before the write
    (a few tag writes later) narrows the race to milliseconds, and cron's lock keeps pipelines
    of one store from overlapping. A champion that moved meanwhile was never compared with this
    candidate, so the candidate is rejected with that reason rather than overwriting it blindly.
    """
    now = current_champion(model_name)
    if now != champion.version:
        moved = Check(
            "compare_and_set",
            False,
            f"champion moved from version {champion.version} to {now} while this run was evaluating; "
            "not overwritten, re-run to compare against the new champion",
            {"compared": champion.version, "now": now},
        )
        return GateDecision(False, [*decision.checks, moved])
    return decision


def _summary(
    verdict: str,
    version: str,
    model_name: str,
    gate_metric: str,
    metrics: dict[str, float],
    champion: ChampionComparison,
    decision: GateDecision,
) -> str:
    """The one line a person reads: verdict, the gate metric against champion, the CI, why."""
    value = metrics[gate_metric]
    if champion.ci is not None:
        numbers = (
            f"{gate_metric} {value:.3f} vs champion {champion.value:.3f}, "
            f"diff CI [{champion.ci.low:+.3f}, {champion.ci.high:+.3f}]"
        )
    else:
        baseline = metrics[f"baseline_{gate_metric}"]
        numbers = f"{gate_metric} {value:.3f} vs baseline {baseline:.3f}, champion: {champion.status}"
    line = f"{verdict} {model_name} version {version} ({numbers})"
    if not decision.promote:
        kept = f"champion stays version {champion.version}" if champion.version else "no champion"
        line += f": {'; '.join(decision.reasons)}; {kept}"
    return line


def _get_run(client: MlflowClient, run_id: str, what: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise PystockError(f"{what} {run_id!r}: no such run in {mlflow.get_tracking_uri()}") from exc


def serving_check(model_name: str, version: str) -> np.ndarray:
    """Load the version from the registry as downstream does and predict its input example.

    Raises:
        PystockError: It does not load, or its predictions are not finite probabilities, one per row.
    """
    uri = f"models:/{model_name}/{version}"
    try:
        model = mlflow.pyfunc.load_model(uri)
        example = model.input_example
        if example is None:
            raise PystockError(f"{uri} has no input example to predict")
        predictions = np.asarray(model.predict(example), dtype=np.float64).ravel()
    except PystockError:
        raise
    except Exception as exc:
        raise PystockError(f"serving check failed: {uri} did not load and predict ({exc})") from exc
    if len(predictions) != len(example) or not np.all(np.isfinite(predictions)):
        raise PystockError(f"serving check failed: {uri} gave {predictions!r} for {len(example)} rows")
    if np.any((predictions < 0) | (predictions > 1)):
        raise PystockError(f"serving check failed: {uri} predicted values outside [0, 1]")
    logger.info("serving check passed: %s predicted %d rows", uri, len(predictions))
    return predictions
