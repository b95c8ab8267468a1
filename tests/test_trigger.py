"""The run key, the code fingerprint and the orphan reaper, on real files and a real store."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_ENTRY_POINT

from pystock_training import config
from pystock_training.params import PARAMETER, RUN_KEY_PARAMETERS, PipelineParams, parameters
from pystock_training.provenance import code_fingerprint, source_digest
from pystock_training.trigger import compute_run_key, reap_orphans, run_key
from tests.conftest import PROJECT_ROOT

PARAMS = PipelineParams().run_key_params()


def test_same_inputs_same_key_and_each_input_matters() -> None:
    base = run_key("d" * 64, "abc", PARAMS)
    assert run_key("d" * 64, "abc", dict(PARAMS)) == base
    assert run_key("e" * 64, "abc", PARAMS) != base
    assert run_key("d" * 64, "abd", PARAMS) != base
    for name, value in {"max_depth": 4, "split": "random", "model_name": "other", "test_size": 0.2}.items():
        assert run_key("d" * 64, "abc", PARAMS | {name: value}) != base, name


@pytest.mark.parametrize(
    "params",
    [
        PipelineParams(fail_on_reject=True),
        PipelineParams(force=True),
        PipelineParams(reap_after_hours=0.5),
        PipelineParams(min_score=0.6, max_regression=0.05, gate_metric="log_loss"),
        PipelineParams(threshold=0.4),
    ],
)
def test_what_cannot_change_the_model_stays_out_of_the_key(params: PipelineParams) -> None:
    assert run_key("d" * 64, "abc", params.run_key_params()) == run_key("d" * 64, "abc", PARAMS)


def test_allowing_a_schema_change_reopens_the_key() -> None:
    # A rejection for a changed input contract is final; with the flag set, the same data and
    # model must be decided again.
    allowed = PipelineParams(allow_schema_change=True).run_key_params()
    assert run_key("d" * 64, "abc", allowed) != run_key("d" * 64, "abc", PARAMS)


def test_content_not_name_or_mtime(tmp_path: Path) -> None:
    original = PROJECT_ROOT / config.DATA_FILE
    copy = tmp_path / "renamed.csv"
    shutil.copyfile(original, copy)  # same bytes, new name, new mtime
    assert compute_run_key(copy, PARAMS) == compute_run_key(original, PARAMS)
    lines = copy.read_text().splitlines()
    lines[100] = lines[100][:-1] + ("0" if lines[100].endswith("1") else "1")
    copy.write_text("\n".join(lines) + "\n")
    assert compute_run_key(copy, PARAMS) != compute_run_key(original, PARAMS)


def copy_project(target: Path) -> Path:
    shutil.copytree(
        PROJECT_ROOT, target, ignore=shutil.ignore_patterns(".git", ".venv", "*.db", "__pycache__", "tests")
    )
    return target


def test_a_copy_without_git_is_fingerprinted_by_its_sources(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    fingerprint = code_fingerprint(project)
    assert fingerprint == f"sources:{source_digest(project)}"
    # Docs do not change the model; code does.
    (project / "README.md").write_text("edited")
    assert code_fingerprint(project) == fingerprint
    # The scorer does not change the model either.
    scorer = project / "pystock_training" / "steps" / "score.py"
    scorer.write_text(scorer.read_text() + "\n# edited\n")
    assert code_fingerprint(project) == fingerprint
    step = project / "pystock_training" / "model.py"
    step.write_text(step.read_text() + "\n# edited\n")
    assert code_fingerprint(project) != fingerprint


# The training parameters the run key leaves out, and the other parameters it takes, with why.
# Any other parameter main passes to train_model is in the key: a new one cannot be forgotten.
NOT_IN_RUN_KEY = {
    "data_file": "the key hashes the file's bytes instead, so a renamed copy is the same data",
    "threshold": "turns the same probabilities into labels; the model does not change",
    "dask_scheduler": "where the dask engine runs, not what it trains (the engine is in the key)",
}
ALSO_IN_RUN_KEY = {"allow_schema_change": "a rejection for a changed input contract is final"}


def another_value(value: object) -> object:
    """A value of the same type that differs from ``value``."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value / 2 if value else 1
    return f"{value}-other"


def test_the_run_key_takes_every_training_parameter_but_the_named_exclusions() -> None:
    main = {param.name for param in parameters("main")}
    training = {param.name for param in parameters("train_model")} & main
    assert set(NOT_IN_RUN_KEY) <= training
    assert set(RUN_KEY_PARAMETERS) == training - set(NOT_IN_RUN_KEY) | set(ALSO_IN_RUN_KEY)
    base = run_key("d" * 64, "abc", PARAMS)
    for name in sorted(main):
        changed = PARAMS | {name: another_value(PARAMETER[name].default)}
        moved = run_key("d" * 64, "abc", changed) != base
        assert moved == (name in RUN_KEY_PARAMETERS), name


@pytest.mark.slow
def test_the_reaper_ends_orphaned_score_runs_and_leaves_others(tracking_uri) -> None:
    # A kill -9 of a cron score job leaves its run RUNNING; the next pipeline start ends it.
    client = mlflow.MlflowClient()
    two_hours_ago = int((time.time() - 2 * 3600) * 1000)
    orphan = client.create_run("0", start_time=two_hours_ago, tags={MLFLOW_PROJECT_ENTRY_POINT: "score"})
    foreign = client.create_run("0", start_time=two_hours_ago, tags={MLFLOW_PROJECT_ENTRY_POINT: "other"})
    recent = client.create_run("0", tags={MLFLOW_PROJECT_ENTRY_POINT: "score"})

    assert reap_orphans("0", max_age_hours=1.0) == [orphan.info.run_id]
    assert client.get_run(orphan.info.run_id).info.status == "FAILED"
    assert {client.get_run(run.info.run_id).info.status for run in (foreign, recent)} == {"RUNNING"}
