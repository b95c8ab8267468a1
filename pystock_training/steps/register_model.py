"""The register_model step: register the model, run the gate, move the aliases, record why."""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pystock_training import config
from pystock_training.champion import current_champion, model_features
from pystock_training.errors import PystockError, first_line
from pystock_training.gate import (
    BootstrapCI,
    ChampionComparison,
    Check,
    GateDecision,
    decide,
    lift_significant,
)
from pystock_training.lock import RegistryLock, registry_lock
from pystock_training.params import GateParams, check_register_params
from pystock_training.report import model_description
from pystock_training.tracking import StepTimer, finished_run, log_missing_params, signals_held, step_run

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
    allow_schema_change: bool = config.ALLOW_SCHEMA_CHANGE,
) -> RegisterResult:
    """Register the train run's model as ``challenger``; move ``champion`` only if it passes the gate.

    Every trained model becomes a version. The gate (pystock_training/gate.py) reads the evaluate
    run's metrics and CI and the serving check of the registered version. ``champion`` moves by
    compare-and-set: only if it still points at the version the candidate was compared with.

    Raises:
        PystockError: The runs or the model cannot be found, or the evaluate run lacks the metrics.
    """
    gate = GateParams(gate_metric, min_score, max_regression, allow_schema_change)
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
        train_run = finished_run(train_run_id, "train_run_id", "to register")
        metrics = finished_run(evaluate_run_id, "evaluate_run_id", "to register").data.metrics
        missing = [name for name in (gate_metric, f"baseline_{gate_metric}") if name not in metrics]
        if missing:
            raise PystockError(
                f"evaluate_run_id {evaluate_run_id} has no {' or '.join(missing)} metric: "
                "is it the evaluate_model run of this train run?"
            )
        model_uri = model_uri or train_run.data.tags.get(config.TAG_MODEL_URI, "")
        if not model_uri:
            raise PystockError(f"train run {train_run_id} logged no model (no {config.TAG_MODEL_URI} tag)")
        evaluation = _evaluation(evaluate_run_id)
        champion = _champion_comparison(train_run, evaluation, metrics, gate_metric)
        lift = _lift(evaluation, gate_metric)

        # Only what people search versions by; the metrics are the logged model's (the version
        # page lists them, one click from the version's), the checks are in decision.json and the
        # description.
        tags = {
            config.TAG_DATA_DIGEST: train_run.data.tags.get(config.TAG_DATA_DIGEST, "unknown"),
            config.TAG_DATA_SIZE: train_run.data.tags.get(config.TAG_DATA_SIZE, "unknown"),
            config.TAG_DATA_ROWS: train_run.data.tags.get(config.TAG_DATA_ROWS, "unknown"),
            config.TAG_CODE_VERSION: train_run.data.tags.get(config.TAG_CODE_VERSION, "unknown"),
            f"{config.TAG_METRIC_PREFIX}{gate_metric}": f"{metrics[gate_metric]:.6g}",
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
            features = _features(model_uri)
        decision = decide(
            gate, metrics[gate_metric], metrics[f"baseline_{gate_metric}"], champion, serving, lift
        )

        # One critical section, under the registry lock: the champion is re-read, the verdict
        # fixed, the alias moved and every record of it written, or none of it. A SIGTERM or
        # Ctrl-C inside is held and delivered right after, when the records say what happened;
        # one while waiting for the lock ends the step with the champion untouched.
        with (
            timer.phase("promotion"),
            registry_lock(model_name, holder=f"run {run.info.run_id}") as lock,
            signals_held(),
        ):
            decision, summary = _decide_and_record(
                client, lock, model_name, number, gate, metrics, champion, lift, decision, features
            )
        timer.log()
        logger.info("%s", summary)
        return RegisterResult(client.get_model_version(model_name, number), decision, summary)


def _decide_and_record(
    client: MlflowClient,
    lock: RegistryLock,
    model_name: str,
    number: str,
    gate: GateParams,
    metrics: dict[str, float],
    champion: ChampionComparison,
    lift: BootstrapCI | None,
    decision: GateDecision,
    features: list[str] | None,
) -> tuple[GateDecision, str]:
    """Compare-and-set ``champion`` under the lock and write the decision everywhere it is read.

    Records come before aliases: a crash in between leaves a version with its decision and no
    alias, never an aliased version without its decision.
    """
    gate_metric = gate.gate_metric
    now = current_champion(model_name)
    if now != champion.version:
        # Compared with one champion, another one is in place: this candidate was never
        # compared with it. Not a verdict on the model, so the next run retries.
        moved = Check(
            "compare_and_set",
            False,
            f"champion moved from version {champion.version or 'none'} to {now} while this run was "
            "evaluating; not overwritten, the next run compares against the new champion",
            {"compared": champion.version, "now": now},
            final=False,
        )
        # A failed comparison with the old champion, or with its features, says nothing final
        # against the new one.
        checks = [
            replace(check, final=False) if check.name in ("champion", "input_contract") else check
            for check in decision.checks
        ]
        decision = GateDecision(False, [*checks, moved])
    verdict = "promoted" if decision.promote else "rejected"
    final = "final" if decision.is_final else "retry"
    outcome = _outcome(gate_metric, metrics, champion, lift, decision, now)
    summary = f"{verdict} {model_name} version {number} {outcome}"
    tags = {config.TAG_DECISION: verdict, config.TAG_VERDICT: final}
    contract = next(check for check in decision.checks if check.name == "input_contract")
    if contract.passed and contract.values.get("change"):
        tags[config.TAG_SCHEMA_CHANGE] = str(contract.values["change"])
    if decision.promote:
        tags[config.TAG_REPLACED_VERSION] = now or "none"
        # Only a lease run out (a section stalled for minutes) loses the lock; then nothing is
        # written and the step fails, to be retried.
        lock.ensure_held()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, number, key, value)
    # The version page names the model and version already; the Versions table shows the first
    # few words of this, so they say what differs between versions. The store keeps 5000 chars.
    client.update_model_version(model_name, number, description=f"{verdict} {outcome}"[:5000])
    if features and decision.promote:
        # The contract downstream calls is the champion's.
        client.update_registered_model(model_name, description=model_description(features))
    record = {
        "verdict": verdict,
        "final": decision.is_final,
        "model_name": model_name,
        "version": number,
        "champion_compared": champion.version,
        "champion_status": champion.status,
        "champion_now": number if decision.promote else now,
        "replaced_version": (now or "none") if decision.promote else None,
        "gate": asdict(gate),
        "candidate": {
            gate_metric: metrics[gate_metric],
            f"baseline_{gate_metric}": metrics[f"baseline_{gate_metric}"],
        },
        "reasons": decision.reasons,
        "summary": summary,
    } | decision.to_dict()
    mlflow.log_dict(record, config.DECISION_ARTIFACT)
    mlflow.set_tags({config.TAG_DECISION: verdict, config.TAG_VERDICT: final, config.TAG_SUMMARY: summary})
    # challenger marks the newest trained version.
    client.set_registered_model_alias(model_name, config.ALIAS_CHALLENGER, number)
    if decision.promote:
        client.set_registered_model_alias(model_name, config.ALIAS_CHAMPION, number)
    return decision, summary


def _features(model_uri: str) -> list[str] | None:
    """The model's input contract, for the registered model's description (None if unreadable)."""
    try:
        return model_features(mlflow.models.get_model_info(model_uri))
    except MlflowException as exc:
        logger.warning("cannot read the features of %s: %s", model_uri, first_line(exc))
        return None


def _evaluation(evaluate_run_id: str) -> dict[str, Any]:
    try:
        return mlflow.artifacts.load_dict(f"runs:/{evaluate_run_id}/evaluation.json")
    except (MlflowException, OSError) as exc:
        raise PystockError(f"evaluate run {evaluate_run_id} has no readable evaluation.json: {exc}") from exc


def _lift(evaluation: dict[str, Any], gate_metric: str) -> BootstrapCI | None:
    """The evaluate run's CI of the lift over the baseline, if it computed one for this metric."""
    lift = evaluation.get("lift_comparison")
    return BootstrapCI(**lift) if lift and lift.get("metric") == gate_metric else None


def _champion_comparison(
    train_run: Run, evaluation: dict[str, Any], metrics: dict[str, float], gate_metric: str
) -> ChampionComparison:
    """What the train run found as champion, with the evaluate run's CI against it."""
    version = train_run.data.tags.get(config.TAG_CHAMPION_VERSION) or None
    status = train_run.data.tags.get(config.TAG_CHAMPION_STATUS, "none")
    if status != "scored":
        return ChampionComparison(version, status)
    comparison = evaluation.get("champion_comparison")
    if comparison is None and evaluation.get("champion_skipped"):
        return ChampionComparison(version, f"not compared: {evaluation['champion_skipped']}")
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
    except ServingUnavailableError as exc:
        logger.warning("%s", exc)
        return Check("serving", False, str(exc), final=False)
    except PystockError as exc:
        logger.warning("%s", exc)
        return Check("serving", False, str(exc))
    return Check(
        "serving",
        True,
        f"models:/{model_name}/{version} loaded and predicted {len(predictions)} rows",
        {"rows": len(predictions)},
    )


def _outcome(
    gate_metric: str,
    metrics: dict[str, float],
    champion: ChampionComparison,
    lift: BootstrapCI | None,
    decision: GateDecision,
    champion_now: str | None,
) -> str:
    """What the one-line summary says after "<verdict> <model> version <n>": the gate metric
    against baseline and champion with their CIs, and why."""
    value = metrics[gate_metric]
    numbers = f"{gate_metric} {value:.3f} vs baseline {metrics[f'baseline_{gate_metric}']:.3f}"
    if lift is not None:
        significance = "significant" if lift_significant(lift) else "not significant"
        numbers += f", lift CI [{lift.low:+.3f}, {lift.high:+.3f}]: {significance}"
    if champion.ci is not None:
        numbers += (
            f"; vs champion {champion.value:.3f} on {champion.ci.n_rows} rows, "
            f"diff CI [{champion.ci.low:+.3f}, {champion.ci.high:+.3f}]"
        )
    else:
        numbers += f"; champion: {champion.status}"
    line = f"({numbers})"
    if not decision.promote:
        if champion_now is None:
            kept = "no champion"
        elif champion_now == champion.version:
            kept = f"champion stays version {champion_now}"
        else:
            kept = f"champion is now version {champion_now}"
        line += f": {'; '.join(decision.reasons)}; {kept}"
    return line


class ServingUnavailableError(PystockError):
    """The version could not be loaded, which may pass: the next run retries."""


def serving_check(model_name: str, version: str) -> np.ndarray:
    """Load the version from the registry as downstream does and predict its input example in
    every shape the clients send: named, positional (as ``pd.read_csv(header=None)`` reads a
    headerless file), a 2-D array and a list of rows. All must give the same probabilities.

    Raises:
        ServingUnavailableError: It does not load.
        PystockError: A shape is refused, or the predictions are not the same finite
            probabilities, one per row.
    """
    uri = f"models:/{model_name}/{version}"
    try:
        # Warnings off: the only ones are about the model's pinned requirements or Python
        # against this environment, which logged them, and finding that out maps every
        # installed package to its modules (about half a second). What loads is the same.
        model = mlflow.pyfunc.load_model(uri, suppress_warnings=True)
    except Exception as exc:
        # Often the registry or artifact store not answering: no verdict on the model.
        raise ServingUnavailableError(
            f"serving check failed: {uri} did not load ({first_line(exc)})"
        ) from exc
    example = model.input_example
    if example is None:
        raise PystockError(f"serving check failed: {uri} has no input example to predict")
    named = pd.DataFrame(example)
    shapes = {
        "named": named,
        # Written as a headerless CSV and read back as the batch scorer reads it: int64 columns
        # 0..13 where the values are whole numbers.
        "positional": pd.read_csv(
            io.StringIO(named.to_csv(header=False, index=False, float_format="%.17g")), header=None
        ),
        "array": named.to_numpy(),
        "list of rows": named.to_numpy().tolist(),
    }
    results = {}
    for shape, data in shapes.items():
        try:
            results[shape] = np.asarray(model.predict(data), dtype=np.float64).ravel()
        except Exception as exc:
            raise PystockError(
                f"serving check failed: {uri} refused the {shape} input shape ({first_line(exc)})"
            ) from exc
    predictions = results["named"]
    if len(predictions) != len(named) or not np.all(np.isfinite(predictions)):
        raise PystockError(f"serving check failed: {uri} gave {predictions!r} for {len(named)} rows")
    if np.any((predictions < 0) | (predictions > 1)):
        raise PystockError(f"serving check failed: {uri} predicted values outside [0, 1]")
    for shape, values in results.items():
        if values.shape != predictions.shape or not np.allclose(values, predictions):
            raise PystockError(
                f"serving check failed: {uri} predicted {values!r} for the {shape} shape, "
                f"{predictions!r} for the named one"
            )
    logger.info("serving check passed: %s predicted %d rows in %d shapes", uri, len(predictions), len(shapes))
    return predictions
