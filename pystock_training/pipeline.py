"""The driver: one parent run, and train, evaluate and register as child ``mlflow run`` steps."""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import ExecutionException
from mlflow.utils.mlflow_tags import (
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_PROJECT_ENTRY_POINT,
    MLFLOW_PROJECT_ENV,
    MLFLOW_RUN_NOTE,
)

from pystock_training import config
from pystock_training.cluster import check_scheduler
from pystock_training.errors import PystockError
from pystock_training.params import PipelineParams, check_params
from pystock_training.provenance import PROJECT_ROOT, code_fingerprint
from pystock_training.report import run_description
from pystock_training.scratch import scratch_dir
from pystock_training.sources import check_source, source_digest
from pystock_training.tracking import log_missing_params, step_run
from pystock_training.trigger import previous_run, reap_orphans, run_key

logger = logging.getLogger(__name__)


class StepFailedError(PystockError):
    """A child step ended FAILED; the message carries the step's own reason."""


@dataclass(frozen=True)
class PipelineResult:
    """What one pipeline run made and decided."""

    run_id: str
    train_run_id: str
    evaluate_run_id: str
    register_run_id: str
    model_version: str
    decision: str
    metrics: dict[str, float]
    summary: str
    fail_on_reject: bool = False
    # A skipped run's recorded verdict, which it answers with: "promoted" or "rejected".
    replayed: str = ""

    @property
    def exit_code(self) -> int:
        """0 when the pipeline did its job; EXIT_REJECTED for a rejection under fail_on_reject.

        A skipped run replays its key's verdict, so a CI job rerun on the same commit and data
        gets the same answer without training.
        """
        rejected = "rejected" in (self.decision, self.replayed)
        return EXIT_REJECTED if self.fail_on_reject and rejected else 0


# Distinct from 1 (an error) for callers that run main.py directly; `mlflow run` reports any
# non-zero exit as 1.
EXIT_REJECTED = 3


def detect_env_manager(run: Run) -> str:
    """The env manager this driver runs under, so the steps use the same one.

    ``mlflow.run`` does not inherit ``--env-manager``: left unset, every step would try to build
    a conda env. ``mlflow run`` tags the run with the env it built (virtualenv, uv, conda) and
    sets no tag for ``local``, which is also right for a plain ``python main.py``.
    """
    return run.data.tags.get(MLFLOW_PROJECT_ENV, "local")


def run_pipeline(
    params: PipelineParams, project_dir: Path = PROJECT_ROOT, env_manager: str | None = None
) -> PipelineResult:
    """Run train_model, evaluate_model and register_model one after another under one parent run.

    Raises:
        DataError: The data file is missing, unreadable or not a regular file (checked before
            any step starts).
        PystockError: A parameter is out of range (checked before any step starts).
        StepFailedError: A step failed; nothing after it ran.
    """
    started = time.monotonic()
    # `cleanup` removes the scratch folder on every way out: success, a failed step, an error,
    # KeyboardInterrupt and the Terminated a SIGTERM raises; the train run keeps the artifact.
    with step_run(config.PIPELINE_RUN_NAME) as run, ExitStack() as cleanup:
        # Under `mlflow run` the parent was created with a random name.
        mlflow.set_tag("mlflow.runName", config.PIPELINE_RUN_NAME)
        log_missing_params(run, asdict(params))
        env_manager = env_manager or detect_env_manager(run)

        # Everything that can be checked up front is, so a typo fails in seconds, not after
        # training. MLproject takes data_file as a string, not a `path`: a missing `path` makes
        # the `mlflow run` CLI fail after creating the run, leaving it RUNNING forever.
        check_params(asdict(params))
        # The run key hashes the file before any step reads it: a FIFO would block that forever
        # and /dev/zero never end, so only a regular file (or parts that exist) gets that far.
        data_file = check_source(params.data_file)
        if params.engine == "dask":
            # An unreachable scheduler fails here, in seconds, before a step run exists.
            check_scheduler(params.dask_scheduler)

        reap_orphans(run.info.experiment_id, params.reap_after_hours, exclude_run_id=run.info.run_id)
        # train_model checks that the bytes it trains on hash to this, so the key, the digest
        # and the model all describe one version of the file.
        data_digest = source_digest(data_file).sha256
        key = run_key(data_digest, code_fingerprint(), params.run_key_params())
        mlflow.set_tag(config.TAG_RUN_KEY, key)
        previous = previous_run(run.info.experiment_id, key, exclude_run_id=run.info.run_id)
        if previous is not None and not params.force:
            return _skip(run, previous, key, started, params.fail_on_reject)
        if previous is not None:
            logger.info("force: retraining although run %s has the same run key", previous.info.run_id)

        predictions_file = cleanup.enter_context(scratch_dir()) / config.PREDICTIONS_FILE_NAME
        common = {
            "experiment_id": run.info.experiment_id,
            "project_dir": project_dir,
            "env_manager": env_manager,
        }

        train = _run_step(
            "train_model",
            params.for_step("train_model")
            | {
                "data_file": data_file,
                "predictions_file": str(predictions_file),
                "data_digest": data_digest,
            },
            **common,
        )
        evaluate = _run_step(
            "evaluate_model",
            params.for_step("evaluate_model")
            | {"predictions_file": str(predictions_file), "train_run_id": train.info.run_id},
            **common,
        )
        register = _run_step(
            "register_model",
            params.for_step("register_model")
            | {"train_run_id": train.info.run_id, "evaluate_run_id": evaluate.info.run_id},
            **common,
        )
        decision = register.data.tags[config.TAG_DECISION]
        verdict = register.data.tags.get(config.TAG_VERDICT, "retry")
        version = register.data.tags[config.TAG_MODEL_VERSION]
        # The evaluation's scores, not its timings: the parent's own are its run's duration.
        metrics = {
            name: value for name, value in evaluate.data.metrics.items() if not name.startswith("timing_")
        }
        mlflow.log_metrics(metrics)
        record = mlflow.artifacts.load_dict(f"runs:/{register.info.run_id}/{config.DECISION_ARTIFACT}")
        mlflow.log_dict(record, config.DECISION_ARTIFACT)
        summary = f"{register.data.tags[config.TAG_SUMMARY]} in {time.monotonic() - started:.1f}s"
        mlflow.set_tags(
            {
                config.TAG_DECISION: decision,
                config.TAG_VERDICT: verdict,
                config.TAG_MODEL_VERSION: version,
                config.TAG_TRAIN_RUN_ID: train.info.run_id,
                config.TAG_EVALUATE_RUN_ID: evaluate.info.run_id,
                config.TAG_DATA_DIGEST: train.data.tags.get(config.TAG_DATA_DIGEST, ""),
                config.TAG_SUMMARY: summary,
                # The run page shows this note as its description, in Markdown.
                MLFLOW_RUN_NOTE: run_description(
                    record | {"summary": summary}, _links(run, params.model_name, version, evaluate)
                ),
            }
        )
    result = PipelineResult(
        run_id=run.info.run_id,
        train_run_id=train.info.run_id,
        evaluate_run_id=evaluate.info.run_id,
        register_run_id=register.info.run_id,
        model_version=version,
        decision=decision,
        metrics=metrics,
        summary=summary,
        fail_on_reject=params.fail_on_reject,
    )
    # The run has ended FINISHED: a rejection is a decision, not an error. The one-line
    # summary is the last thing the driver logs.
    if result.exit_code:
        logger.error("%s (fail_on_reject: exit %d)", summary, result.exit_code)
    else:
        logger.info("%s", summary)
    return result


def _links(run: Run, model_name: str, version: str, evaluate: Run) -> dict[str, str]:
    """Links to the version, the decision record and the report, as the MLflow UI routes them."""
    runs = f"#/experiments/{run.info.experiment_id}/runs"
    return {
        f"{model_name} version {version}": f"#/models/{quote(model_name)}/versions/{version}",
        "decision record": f"{runs}/{run.info.run_id}/artifacts/{config.DECISION_ARTIFACT}",
        "evaluation report": f"{runs}/{evaluate.info.run_id}/artifacts/evaluation_report.md",
    }


def _skip(run: Run, previous: Run, key: str, started: float, fail_on_reject: bool) -> PipelineResult:
    """End this run as ``skipped``, pointing at the run whose verdict this key already has."""
    version = previous.data.tags.get(config.TAG_MODEL_VERSION, "")
    recorded = previous.data.tags.get(config.TAG_DECISION, "")
    summary = (
        f"skipped: nothing new (run key {key[:12]}); run {previous.info.run_id} already trained it "
        f"(version {version}, {recorded}); -P force=true retrains "
        f"in {time.monotonic() - started:.1f}s"
    )
    mlflow.set_tags(
        {
            config.TAG_DECISION: "skipped",
            config.TAG_SKIPPED_FOR: previous.info.run_id,
            config.TAG_MODEL_VERSION: version,
            config.TAG_SUMMARY: summary,
        }
    )
    result = PipelineResult(
        run_id=run.info.run_id,
        train_run_id="",
        evaluate_run_id="",
        register_run_id="",
        model_version=version,
        decision="skipped",
        metrics={},
        summary=summary,
        fail_on_reject=fail_on_reject,
        replayed=recorded,
    )
    if result.exit_code:
        logger.error("%s (fail_on_reject: exit %d, the recorded verdict)", summary, result.exit_code)
    else:
        logger.info("%s", summary)
    return result


def _run_step(
    entry_point: str,
    parameters: dict[str, object],
    *,
    experiment_id: str,
    project_dir: Path,
    env_manager: str,
) -> Run:
    """Run one entry point as a child run and return its finished run.

    Raises:
        StepFailedError: The step exited non-zero; the message is the step's ``pystock.error`` tag.
    """
    logger.info("starting %s", entry_point)
    try:
        submitted = mlflow.projects.run(
            str(project_dir),
            entry_point=entry_point,
            parameters=parameters,
            experiment_id=experiment_id,
            env_manager=env_manager,
            run_name=entry_point,
            synchronous=True,
        )
    except ExecutionException as exc:
        raise StepFailedError(f"{entry_point} failed: {_failure_reason(entry_point, exc)}") from exc
    return MlflowClient().get_run(submitted.run_id)


def _failure_reason(entry_point: str, exc: ExecutionException) -> str:
    """The failed child's own one-line reason, found by its parent and entry point tags."""
    parent = mlflow.active_run()
    if parent is None:
        return str(exc)
    runs = MlflowClient().search_runs(
        [parent.info.experiment_id],
        filter_string=(
            f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}' "
            f"and tags.`{MLFLOW_PROJECT_ENTRY_POINT}` = '{entry_point}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs and config.TAG_ERROR in runs[0].data.tags:
        return runs[0].data.tags[config.TAG_ERROR]
    return f"{exc} (see the step's log above)"
