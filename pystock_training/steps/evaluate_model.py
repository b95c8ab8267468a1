"""The evaluate_model step: metrics, bootstrap CIs of the lift and of the champion diff, plots, a report.

It needs sklearn and matplotlib but never xgboost: it reads predictions, not the model.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from pystock_training import config
from pystock_training.errors import DataError, PystockError, first_line
from pystock_training.gate import BootstrapCI, oriented_diff, paired_bootstrap_ci, uses_probabilities
from pystock_training.metrics import (
    baseline_predictions,
    classification_metrics,
    counted_metrics,
    evaluate_predictions,
    flatten,
)
from pystock_training.params import check_gate_metric
from pystock_training.plots import grouped_figures
from pystock_training.predictions_stream import PredictionsSummary, bootstrap_cis, summarize
from pystock_training.report import evaluation_report
from pystock_training.scratch import out_of_space_reported, scratch_dir
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
    passes it) names the finished train run whose model that is, when ``model_uri`` is empty; when
    ``predictions_file`` is not on this machine, its ``predictions`` artifact is read instead.

    ``predictions_file`` is a CSV or a directory of CSV parts (see ``handoff``). It is read twice,
    batch by batch, and never held whole: memory stays flat from thousands of rows to billions
    (``predictions_stream``).

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
        with ExitStack() as cleanup:
            source = _local_predictions(Path(predictions_file), train_run_id, cleanup)
            with timer.phase("read_predictions"):
                summary = summarize(source, sha256=expected_sha256)
            if expected_sha256:
                mlflow.set_tag(config.TAG_PREDICTIONS_SHA256, expected_sha256)
            with timer.phase("metrics"):
                try:
                    results, lift, champion = _score(summary, gate_metric)
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
            for name, figure in grouped_figures(summary.model.predictions(), summary.prior).items():
                mlflow.log_figure(figure, f"plots/{name}")
        record: dict[str, object] = results | {
            "champion_comparison": asdict(comparison) if comparison else None,
            "lift_comparison": asdict(lift),
        }
        if champion and champion.skipped:
            record["champion_skipped"] = champion.skipped
        if summary.approximation:
            logger.warning("approximate metrics: %s", summary.approximation)
            record["approximation"] = summary.approximation
        mlflow.log_dict(record, "evaluation.json")
        mlflow.log_text(
            evaluation_report(
                results,
                summary.n_rows,
                comparison,
                lift=lift,
                champion_skipped=champion.skipped if champion else "",
                artifacts=f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifacts",
                approximation=summary.approximation,
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
            summary.n_rows,
        )
        return flat


def _local_predictions(path: Path, train_run_id: str, cleanup: ExitStack) -> Path:
    """``path``, or the train run's predictions artifact when ``path`` is not on this machine.

    The artifact (``predictions/predictions.csv``, or the parts ``predictions/part-*.csv``) is
    downloaded into a private scratch folder that ``cleanup`` removes on every way out: the
    steps may run on different hosts (a Kubernetes job, a worker pool).

    Raises:
        DataError: Neither the path nor the artifact exists.
    """
    if path.exists() or not train_run_id:
        return path
    folder = cleanup.enter_context(scratch_dir())
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                run_id=train_run_id, artifact_path=config.PREDICTIONS_ARTIFACT_DIR, dst_path=str(folder)
            )
        )
    except (MlflowException, OSError) as exc:
        raise DataError(
            path,
            f"no such predictions file, nor a {config.PREDICTIONS_ARTIFACT_DIR!r} artifact on train run "
            f"{train_run_id} ({first_line(exc)})",
        ) from exc
    parts = sorted(part.name for part in local.glob("*.csv"))
    # One predictions.csv is the file train_model wrote; anything else is a directory of parts.
    source = local / parts[0] if parts == [config.PREDICTIONS_FILE_NAME] else local
    logger.info(
        "predictions_file %s is not on this machine: reading train run %s's artifact %r instead (%s)",
        path,
        train_run_id,
        config.PREDICTIONS_ARTIFACT_DIR,
        "one file" if source.is_file() else f"{len(parts)} parts",
    )
    return source


def _score(
    summary: PredictionsSummary, metric: str
) -> tuple[dict[str, dict[str, float]], BootstrapCI, ChampionResult | None]:
    """The metrics from the counts, then both intervals from one more pass over the predictions.

    Raises:
        ValueError: The test labels hold a single class.
    """
    results = evaluate_predictions(summary.model.predictions(), summary.prior, counted_metrics(summary.model))
    champion, champion_point = _champion_metrics(summary, metric, results["model"])
    lift, comparison = bootstrap_cis(summary, metric, results["lift"][metric], champion_point)
    if champion and comparison is not None:
        champion = replace(champion, ci=replace(comparison, test_rows=summary.n_rows))
    return results, lift, champion


def _champion_metrics(
    summary: PredictionsSummary, metric: str, model: dict[str, float]
) -> tuple[ChampionResult | None, float | None]:
    """The champion's metrics on its clean rows and the candidate's oriented difference to it there.

    The CI comes from the bootstrap pass. A comparison that cannot be made (too few clean rows,
    or one class among them) is skipped with a warning, as ``compare_champion`` skips it.
    """
    if summary.champion is None or summary.candidate_clean is None:
        return None, None
    n_clean, n_rows = summary.n_clean, summary.n_rows
    if n_clean < 2 or len(np.unique(summary.champion.predictions().y_true)) < 2:
        reason = (
            f"only {n_clean} of {n_rows} test rows are rows it never trained on"
            if n_clean < 2
            else f"the {n_clean} of {n_rows} test rows it never trained on hold a single class"
        )
        logger.warning("champion not compared: %s", reason)
        return ChampionResult(n_clean, skipped=reason), None
    champion = counted_metrics(summary.champion)
    candidate = model[metric] if n_clean == n_rows else counted_metrics(summary.candidate_clean)[metric]
    return ChampionResult(n_clean, champion), oriented_diff(metric, candidate, champion[metric])


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
