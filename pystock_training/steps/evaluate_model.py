"""The evaluate_model step: metrics, bootstrap CIs of the lift and of the champion diff, plots, a report.

It needs sklearn and matplotlib but never xgboost: it reads predictions, not the model.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from pystock_training import config
from pystock_training.errors import DataError, PystockError, first_line
from pystock_training.gate import BootstrapCI, oriented_diff, paired_bootstrap_ci, uses_probabilities
from pystock_training.handoff import read_predictions
from pystock_training.metrics import (
    baseline_predictions,
    classification_metrics,
    evaluate_predictions,
    flatten,
    group_predictions,
)
from pystock_training.params import check_gate_metric
from pystock_training.plots import evaluation_figures
from pystock_training.report import evaluation_report
from pystock_training.scratch import out_of_space_reported
from pystock_training.tracking import StepTimer, finished_run, log_missing_params, step_run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChampionResult:
    """The champion as scored on the rows it never trained on, or why it was not compared."""

    rows_compared: int
    metrics: dict[str, float] | None = None
    ci: BootstrapCI | None = None
    skipped: str = ""


def evaluate_model(
    *,
    predictions_file: str | Path,
    gate_metric: str = config.GATE_METRIC,
    model_uri: str = "",
    train_run_id: str = "",
) -> dict[str, float]:
    """Score the test predictions against the naive baseline and, when present, the champion.

    Logs every metric for the model (``roc_auc``), the baseline (``baseline_roc_auc``) and the
    lift over it (``lift_roc_auc``), with a paired block bootstrap CI of the gate metric's lift
    (``lift_roc_auc_ci_low``, ``lift_roc_auc_ci_high``). When the predictions carry a champion,
    it is compared only on the rows where its cells are filled (the rows it never trained on):
    ``champion_rows_compared``, its metrics on those rows (``champion_roc_auc``) and the CI of
    the candidate's difference to it on the same rows (``diff_roc_auc``, ``diff_roc_auc_ci_low``,
    ``diff_roc_auc_ci_high``). Also logs plots, ``evaluation.json`` and a report. With
    ``model_uri`` (the train run's logged model), the metrics are logged against that model too,
    so its page lists them (a registered version links to it as its source model), and the
    predictions file must hash to the sha256 the train run that logged the model recorded: a file
    changed since train_model wrote it is refused, not scored. ``train_run_id`` (the driver
    passes it) names the finished train run whose model that is, when ``model_uri`` is empty.

    Returns:
        The logged metrics.

    Raises:
        DataError: The predictions file is missing, malformed, or not the one the train run wrote.
        PystockError: Unknown gate metric, a train run that did not finish, or no space left for
            the plots and report.
    """
    timer = StepTimer()
    with step_run("evaluate_model") as run, out_of_space_reported():
        log_missing_params(
            run,
            {"predictions_file": predictions_file, "gate_metric": gate_metric, "model_uri": model_uri}
            | {"train_run_id": train_run_id},
        )
        try:
            check_gate_metric(gate_metric)
        except ValueError as exc:
            raise PystockError(f"invalid parameters: {exc}") from exc
        if train_run_id:
            train_run = finished_run(train_run_id, "train_run_id", "to evaluate")
            model_uri = model_uri or train_run.data.tags.get(config.TAG_MODEL_URI, "")
            if model_uri:
                mlflow.set_tag(config.TAG_MODEL_URI, model_uri)
        model_id = _model_id(model_uri) if model_uri else None
        expected_sha256 = _recorded_predictions_sha256(model_id) if model_id else ""
        with timer.phase("read_predictions"):
            frame = read_predictions(predictions_file, sha256=expected_sha256)
        if expected_sha256:
            mlflow.set_tag(config.TAG_PREDICTIONS_SHA256, expected_sha256)
        y_true = frame["y_test"].to_numpy()
        y_pred = frame["y_pred"].to_numpy()
        y_proba = frame["y_proba"].to_numpy(dtype=np.float64)
        baseline_proba = frame["baseline_proba"].to_numpy(dtype=np.float64)
        prior = float(baseline_proba[0])
        with timer.phase("metrics"):
            try:
                # Grouped once: the metrics and the plots both work from these rows.
                rows = group_predictions(y_true, y_pred, y_proba)
                results = evaluate_predictions(rows, prior)
                lift = lift_ci(y_true, y_pred, y_proba, prior, gate_metric, results["lift"][gate_metric])
                champion = None
                if "champion_proba" in frame.columns:
                    champion = compare_champion(frame, y_true, y_pred, y_proba, gate_metric, results["model"])
            except ValueError as exc:
                raise DataError(predictions_file, str(exc)) from exc
        comparison = champion.ci if champion else None
        if champion and champion.metrics:
            results["champion"] = champion.metrics
        flat = flatten(results) | {
            f"lift_{gate_metric}_ci_low": lift.low,
            f"lift_{gate_metric}_ci_high": lift.high,
        }
        if champion:
            flat["champion_rows_compared"] = champion.rows_compared
        if comparison is not None:
            flat |= {
                f"diff_{gate_metric}": comparison.diff,
                f"diff_{gate_metric}_ci_low": comparison.low,
                f"diff_{gate_metric}_ci_high": comparison.high,
            }
        mlflow.log_metrics(flat, model_id=model_id)
        with timer.phase("plots"):
            for name, figure in evaluation_figures(y_true, y_pred, y_proba, baseline_proba, rows).items():
                mlflow.log_figure(figure, f"plots/{name}")
        record: dict[str, object] = results | {
            "champion_comparison": asdict(comparison) if comparison else None,
            "lift_comparison": asdict(lift),
        }
        if champion and champion.skipped:
            record["champion_skipped"] = champion.skipped
        mlflow.log_dict(record, "evaluation.json")
        mlflow.log_text(
            evaluation_report(
                results,
                len(frame),
                comparison,
                lift=lift,
                champion_skipped=champion.skipped if champion else "",
                artifacts=f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts",
            ),
            "evaluation_report.md",
        )
        timer.log()
        logger.info(
            "%s %.4f (baseline %.4f, lift CI [%+.4f, %+.4f]%s) on %d test rows",
            gate_metric,
            flat[gate_metric],
            flat[f"baseline_{gate_metric}"],
            lift.low,
            lift.high,
            f", champion {flat[f'champion_{gate_metric}']:.4f} on {comparison.n_rows} rows, diff CI "
            f"[{comparison.low:+.4f}, {comparison.high:+.4f}]"
            if comparison
            else "",
            len(frame),
        )
        return flat


def _model_id(model_uri: str) -> str:
    """The logged model's id: ``models:/m-<id>`` names it; another URI is looked up."""
    name = model_uri.removeprefix("models:/")
    if name != model_uri and name.startswith("m-") and "/" not in name:
        return name
    try:
        model_id = mlflow.models.get_model_info(model_uri).model_id
    except MlflowException as exc:
        raise PystockError(f"model_uri {model_uri!r}: {first_line(exc)}") from exc
    if not model_id:
        raise PystockError(
            f"model_uri {model_uri!r} is not a logged model (MLflow 3), so no metrics can go to it"
        )
    return model_id


def _recorded_predictions_sha256(model_id: str) -> str:
    """The predictions sha256 the model's train run recorded ("" for a run that recorded none)."""
    try:
        run_id = mlflow.get_logged_model(model_id).source_run_id
        if not run_id:
            return ""
        return mlflow.get_run(run_id).data.tags.get(config.TAG_PREDICTIONS_SHA256, "")
    except MlflowException as exc:
        raise PystockError(f"logged model {model_id}: {first_line(exc)}") from exc


def lift_ci(
    y_true: np.ndarray, y_pred: np.ndarray, y_proba: np.ndarray, prior: float, metric: str, point: float
) -> BootstrapCI:
    """CI of the model's lift over the naive baseline, the baseline playing the champion's part.

    The baseline predicts the same for every row (the prior, or the majority class as a label),
    so on every resample it scores what a constant scores: ROC AUC 0.5, accuracy the share of
    the majority class. ``point`` is the lift on all rows, already computed.
    """
    # A read-only view of one value, not millions of copies of it.
    if uses_probabilities(metric):
        model, baseline = y_proba, np.broadcast_to(np.float64(prior), y_proba.shape)
    else:
        majority = np.float64(baseline_predictions(prior, 1)[0][0])
        model, baseline = y_pred, np.broadcast_to(majority, y_pred.shape)
    return paired_bootstrap_ci(y_true, model, baseline, metric, point=point)


def compare_champion(
    frame: pd.DataFrame,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    y_proba: np.ndarray,
    metric: str,
    model: dict[str, float],
) -> ChampionResult:
    """Score the champion and the candidate on the rows where the champion's cells are filled.

    Empty cells mark rows the champion may have trained on; the candidate is scored on the same
    subset for the difference (``model``, its metrics on all rows, is reused when every row is
    filled). Too few rows, or a single class, skips the comparison with a warning.
    """
    champion_proba = frame["champion_proba"].to_numpy(dtype=np.float64)
    clean = ~np.isnan(champion_proba)
    n_clean, n_rows = int(clean.sum()), len(clean)
    # A slice, not a mask, when every row is filled: millions of rows are not copied.
    subset = slice(None) if n_clean == n_rows else clean
    y = y_true[subset]
    if n_clean < 2 or y.min() == y.max():
        reason = (
            f"only {n_clean} of {n_rows} test rows are rows it never trained on"
            if n_clean < 2
            else f"the {n_clean} of {n_rows} test rows it never trained on hold a single class"
        )
        logger.warning("champion not compared: %s", reason)
        return ChampionResult(n_clean, skipped=reason)
    champion_pred = frame["champion_pred"].to_numpy()[subset].astype(np.int8, copy=False)
    champion_proba = champion_proba[subset]
    champion = classification_metrics(y, champion_pred, champion_proba)
    if n_clean == n_rows:
        candidate_value = model[metric]
    else:
        candidate_value = classification_metrics(y, y_pred[subset], y_proba[subset])[metric]
    candidate, scored = (
        (y_proba[subset], champion_proba) if uses_probabilities(metric) else (y_pred[subset], champion_pred)
    )
    point = oriented_diff(metric, candidate_value, champion[metric])
    ci = paired_bootstrap_ci(y, candidate, scored, metric, point=point)
    return ChampionResult(n_clean, champion, replace(ci, test_rows=n_rows))
