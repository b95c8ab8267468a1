"""Scheduling: the run key, "has this already been trained?", and reaping orphaned runs.

The run key of a pipeline run hashes the dataset's bytes, the code fingerprint and the
parameters that can change the model. An invocation whose key already has a final verdict
(promoted, or rejected on the model's merits) trains nothing. ``python -m
pystock_training.trigger`` answers the same question for cron without creating a run, so an
idle tick leaves the store untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_ENTRY_POINT

from pystock_training import config
from pystock_training.errors import DataError
from pystock_training.params import RUN_KEY_PARAMETERS, PipelineParams
from pystock_training.provenance import code_fingerprint
from pystock_training.sources import check_source, source_digest

logger = logging.getLogger("pystock_training.trigger")  # not __main__ under python -m

# The entry points whose orphaned runs the reaper ends: the pipeline's, and score's (a cron job too).
PIPELINE_ENTRY_POINTS = ("main", "train_model", "evaluate_model", "register_model", "score")

# The youngest run the reaper may end, whatever reap_after_hours says: 10 minutes. A pipeline
# run is RUNNING from its start, and a lower age (a typo, 0, NaN) would fail concurrent pipelines
# while they train; a real orphan waits at most this long to be reaped.
MIN_REAP_AGE_HOURS = 10 / 60

# Exit codes of the cron pre-check.
EXIT_NOTHING_NEW = 0
EXIT_NEW = 10


def run_key(data_digest: str, code: str, params: dict[str, object]) -> str:
    """sha256 of the data digest, the code fingerprint and the model-changing parameters."""
    chosen = {name: params[name] for name in RUN_KEY_PARAMETERS}
    payload = json.dumps({"data": data_digest, "code": code, "params": chosen}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def compute_run_key(data_file: str | Path, params: dict[str, object]) -> str:
    """The run key of a pipeline over this file (hashed in chunks) with these parameters."""
    return run_key(source_digest(data_file).sha256, code_fingerprint(), params)


def previous_run(experiment_id: str, key: str, exclude_run_id: str | None = None) -> Run | None:
    """The newest pipeline run with this run key that reached a final verdict, if any.

    Only a verdict on the model counts (promoted, or rejected on its merits), whatever the run's
    status: under ``fail_on_reject`` MLflow marks a rejecting run FAILED. A rejection because
    the champion moved or the registry did not answer, an error, or a kill is retried.
    """
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{config.TAG_RUN_KEY}` = '{key}' and tags.`{config.TAG_VERDICT}` = 'final' "
            f"and tags.`{config.TAG_DECISION}` != 'skipped'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    return next((run for run in runs if run.info.run_id != exclude_run_id), None)


def reap_orphans(experiment_id: str, max_age_hours: float, exclude_run_id: str | None = None) -> list[str]:
    """Mark FAILED the pipeline's runs still RUNNING with no sign of life for longer than the age.

    A kill -9 (or a lost machine) ends a process without ending its run. MLflow records no
    heartbeat, so a run's start time is its last sign of life; the age must exceed the longest
    real pipeline run. Whatever age it is given (0, negative, NaN), a run younger than
    ``MIN_REAP_AGE_HOURS`` is never touched: it may be a concurrent pipeline still training.
    """
    client = MlflowClient()
    # Written so that NaN fails the comparison and takes the floor; inf still means "never".
    if not max_age_hours >= MIN_REAP_AGE_HOURS:
        logger.info(
            "reap_after_hours=%s is below the floor: only runs older than %g minutes are reaped",
            max_age_hours,
            MIN_REAP_AGE_HOURS * 60,
        )
        max_age_hours = MIN_REAP_AGE_HOURS
    cutoff_ms = (time.time() - max_age_hours * 3600) * 1000
    # Tag filters take no IN list: fetch the RUNNING ones and keep the pipeline's.
    runs = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    reaped = []
    for run in runs:
        ours = run.data.tags.get(MLFLOW_PROJECT_ENTRY_POINT) in PIPELINE_ENTRY_POINTS
        if not ours or run.info.run_id == exclude_run_id or run.info.start_time > cutoff_ms:
            continue
        age_hours = (time.time() * 1000 - run.info.start_time) / 3_600_000
        reason = f"reaped: still RUNNING {age_hours:.2f} h after it started, with no process ending it"
        client.set_tag(run.info.run_id, config.TAG_ERROR, reason)
        client.set_terminated(run.info.run_id, "FAILED")
        logger.warning(
            "marked orphaned run %s (%s) FAILED: %s",
            run.info.run_id,
            run.data.tags.get(MLFLOW_PROJECT_ENTRY_POINT, "?"),
            reason,
        )
        reaped.append(run.info.run_id)
    return reaped


@dataclass(frozen=True)
class TriggerCheck:
    """What the cron pre-check found."""

    key: str
    previous: Run | None

    @property
    def is_new(self) -> bool:
        """Whether a pipeline run would train."""
        return self.previous is None


def check(data_file: str | Path, params: dict[str, object], experiment_id: str | None = None) -> TriggerCheck:
    """Would a pipeline over this file train? Reads the store; creates nothing."""
    key = compute_run_key(data_file, params)
    experiment = experiment_id or _experiment_id()
    return TriggerCheck(key, previous_run(experiment, key) if experiment else None)


def _experiment_id() -> str | None:
    """The experiment `mlflow run` would use (MLFLOW_EXPERIMENT_NAME/ID or Default), if it exists."""
    name = mlflow.environment_variables.MLFLOW_EXPERIMENT_NAME.get()
    if name:
        experiment = MlflowClient().get_experiment_by_name(name)
        return experiment.experiment_id if experiment else None
    return mlflow.environment_variables.MLFLOW_EXPERIMENT_ID.get() or "0"


@click.command("trigger")
@click.option("--data-file", required=True, help="The dataset a cron tick would train on.")
def main(data_file: str) -> None:
    """Exit 0 when this data was trained already (nothing to do), 10 when it is new, 1 on error."""
    from pystock_training.cli import configure_logging

    configure_logging()
    try:
        # The same check and line as main's: a FIFO or a device would hang the hash below.
        path = check_source(data_file)
    except DataError as exc:
        logger.error("%s", exc)
        sys.exit(1)
    try:
        result = check(path, PipelineParams(data_file=str(path)).run_key_params())
    except Exception as exc:  # noqa: BLE001 - the boundary: one line, then a real failure exit
        logger.error("cannot check %s against %s: %s", path, mlflow.get_tracking_uri(), exc)
        sys.exit(1)
    if result.is_new:
        logger.info("new: %s (run key %s) has not been trained", path, result.key[:12])
        sys.exit(EXIT_NEW)
    previous = result.previous
    logger.info(
        "nothing new: %s (run key %s) was trained by run %s (%s, version %s)",
        path,
        result.key[:12],
        previous.info.run_id,
        previous.data.tags.get(config.TAG_DECISION),
        previous.data.tags.get(config.TAG_MODEL_VERSION),
    )
    sys.exit(EXIT_NOTHING_NEW)


if __name__ == "__main__":
    main()
