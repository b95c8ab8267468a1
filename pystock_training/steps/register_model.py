"""The register_model step: register the model, run the gate, move the aliases, record why."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pystock_training import config
from pystock_training.champion import current_champion
from pystock_training.errors import PystockError
from pystock_training.gate import BootstrapCI, ChampionComparison, Check, GateDecision, decide
from pystock_training.params import GateParams, check_register_params
from pystock_training.tracking import StepTimer, log_missing_params, step_run

logger = logging.getLogger(__name__)


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
            if name.removeprefix("baseline_").removeprefix("champion_") in config.METRIC_NAMES
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
