"""The evaluate_model step: metrics, the champion comparison's bootstrap CI, plots and a report.

It needs sklearn and matplotlib but never xgboost: it reads predictions, not the model.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np

from pystock_training import config
from pystock_training.errors import DataError, PystockError
from pystock_training.gate import oriented_diff, paired_bootstrap_ci, uses_probabilities
from pystock_training.handoff import read_predictions
from pystock_training.metrics import classification_metrics, evaluate_predictions, flatten, group_predictions
from pystock_training.params import check_gate_metric
from pystock_training.plots import evaluation_figures
from pystock_training.report import evaluation_report
from pystock_training.tracking import StepTimer, log_missing_params, step_run

logger = logging.getLogger(__name__)


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
                # Grouped once: the metrics and the plots both work from these rows.
                rows = group_predictions(y_true, y_pred, y_proba)
                results = evaluate_predictions(rows, float(baseline_proba[0]))
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
            for name, figure in evaluation_figures(y_true, y_pred, y_proba, baseline_proba, rows).items():
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
