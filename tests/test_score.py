"""The score step in-process: a real SQLite store, a real registered booster, real files."""

from __future__ import annotations

import hashlib
import logging
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn import metrics as skm

import score as score_cli
from pystock_training import config
from pystock_training.batches import open_features
from pystock_training.errors import DataError, PystockError
from pystock_training.metrics import classification_metrics, grouped_metrics
from pystock_training.steps.score import (
    DEFAULT_MODEL_URI,
    TAG_HAS_LABELS,
    TAG_METRICS_SKIPPED,
    TAG_MODEL_NAME,
    TAG_OUTPUT_FILE,
    LabelCounts,
    model_features,
    score,
)
from tests.conftest import PROJECT_ROOT, signal_frame
from tests.test_project_files import mlproject
from tests.test_project_files import test_every_parameter_has_one_name_and_one_default as check_entry_point

FEATURES = [f"f{i}" for i in range(14)]
# Small batches, so every file here is read in several (a CSV block is at least 4 KiB: ~130 rows).
BATCH_ROWS = 64


def fit_booster(seed: int = 0, rounds: int = 15) -> xgb.Booster:
    """A tiny classifier on the conftest signal frame, trained as train_model does."""
    frame = signal_frame(n_rows=600, seed=seed)
    features = frame.iloc[:, :14].set_axis(FEATURES, axis=1)
    data = xgb.DMatrix(features, label=frame.iloc[:, 14])
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "seed": seed}
    return xgb.train(params, data, num_boost_round=rounds)


def register_booster(booster: xgb.Booster, *, alias: str | None = None, new_style: bool = False) -> str:
    """Log ``booster`` as train_model does (signature of float64 f0..f13), register it; its version.

    ``new_style``: no signature, the feature names in the MLmodel metadata instead, as models
    logged by the serving contract carry them.
    """
    example = pd.DataFrame(np.zeros((3, 14)), columns=FEATURES)
    extra = (
        {"metadata": {"features": FEATURES}}
        if new_style
        else {"signature": infer_signature(example, np.zeros(3)), "input_example": example}
    )
    with mlflow.start_run(run_name="register-for-test"):
        # Named requirements skip MLflow's inference, a subprocess of seconds per model.
        info = mlflow.xgboost.log_model(booster, name="model", pip_requirements=["xgboost"], **extra)
    version = mlflow.register_model(info.model_uri, config.MODEL_NAME).version
    if alias:
        MlflowClient().set_registered_model_alias(config.MODEL_NAME, alias, version)
    return str(version)


def expected_proba(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
    """The booster's own probabilities, computed without the scorer, as float64."""
    frame = pd.DataFrame(np.asarray(features, dtype=np.float32), columns=FEATURES)
    return booster.inplace_predict(frame).astype(np.float64)


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, xgb.Booster]:
    """A store where version 1 is @champion and a different version 2 exists ("latest" is wrong).

    Built once per module (creating a store and logging models takes seconds); each test gets
    its own copy of the database, so what one test does to the registry no other test sees.
    """
    folder = tmp_path_factory.mktemp("registry")
    booster = fit_booster(seed=0)
    with pytest.MonkeyPatch.context() as patch:
        # The artifacts stay in this folder; the copies of the database point at them.
        patch.chdir(folder)
        mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
        try:
            register_booster(booster, alias=config.ALIAS_CHAMPION)
            register_booster(fit_booster(seed=1, rounds=5))
        finally:
            mlflow.set_tracking_uri(None)
    return folder / "mlflow.db", booster


@pytest.fixture
def champion(registry_template: tuple[Path, xgb.Booster], tracking_uri: str) -> xgb.Booster:
    """The template store copied to this test's tracking URI; the @champion booster."""
    database, booster = registry_template
    shutil.copyfile(database, tracking_uri.removeprefix("sqlite:///"))
    return booster


def sklearn_metrics(y_true: np.ndarray, y_proba: np.ndarray, threshold: float) -> dict[str, float]:
    y_pred = (y_proba >= threshold).astype(int)
    return {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, y_pred),
        "precision": skm.precision_score(y_true, y_pred, zero_division=0),
        "recall": skm.recall_score(y_true, y_pred, zero_division=0),
        "f1": skm.f1_score(y_true, y_pred, zero_division=0),
        "mcc": skm.matthews_corrcoef(y_true, y_pred),
        "roc_auc": skm.roc_auc_score(y_true, y_proba),
        "average_precision": skm.average_precision_score(y_true, y_proba),
        "log_loss": skm.log_loss(y_true, y_proba, labels=[0, 1]),
    }


def write_table(kind: str, frame: pd.DataFrame, path: Path) -> None:
    """``frame`` (14 features, maybe a label) in one of the formats the loader reads."""
    if kind == "headerless":
        frame.to_csv(path, header=False, index=False)
    elif kind == "header":
        frame.set_axis([f"day_{i}" for i in range(frame.shape[1])], axis=1).to_csv(path, index=False)
    elif kind == "to_csv":
        frame.to_csv(path)  # the upstream job's default: index column, header ,0,1,...
    elif kind == "parquet":
        frame.rename(columns=str).to_parquet(path)
    else:
        raise ValueError(kind)


def scored_run(result_run_id: str):
    return MlflowClient().get_run(result_run_id)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["headerless", "header", "to_csv", "parquet"])
@pytest.mark.parametrize("labelled", [True, False], ids=["15-columns", "14-columns"])
def test_every_format_scores_every_row_in_input_order(kind, labelled, champion, tmp_path) -> None:
    frame = signal_frame(n_rows=1000, seed=5)
    table = frame if labelled else frame.iloc[:, :14]
    source = tmp_path / ("input.parquet" if kind == "parquet" else "input.csv")
    write_table(kind, table, source)
    output = tmp_path / "scored.csv"

    result = score(input_file=source, output_file=output, batch_rows=BATCH_ROWS)

    scored = pd.read_csv(output)
    proba = expected_proba(champion, frame.iloc[:, :14].to_numpy())
    assert list(scored.columns) == (["y_proba", "y_pred", "y_true"] if labelled else ["y_proba", "y_pred"])
    assert len(scored) == 1000 == result.rows
    # Row by row, in input order: the same float32 probabilities the booster gives, exactly.
    np.testing.assert_array_equal(scored["y_proba"].to_numpy(), proba)
    np.testing.assert_array_equal(scored["y_pred"].to_numpy(), (proba >= 0.5).astype(int))
    run = scored_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_HAS_LABELS] == str(labelled).lower()
    if labelled:
        np.testing.assert_array_equal(scored["y_true"].to_numpy(), frame.iloc[:, 14].to_numpy())
        assert set(config.METRIC_NAMES) <= set(run.data.metrics)
    else:
        assert not set(config.METRIC_NAMES) & set(run.data.metrics)


def test_several_batches_were_read(champion, tmp_path) -> None:
    # The format test relies on its files being read in several batches; this says they are.
    source = tmp_path / "input.csv"
    signal_frame(n_rows=1000).to_csv(source, header=False, index=False)
    with open_features(source, 14, batch_rows=BATCH_ROWS) as table:
        sizes = [len(batch.features) for batch in table.batches()]
    assert len(sizes) > 3 and sum(sizes) == 1000
    assert max(sizes) < 200


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_metrics_equal_sklearn_on_the_full_arrays(threshold, champion, tmp_path) -> None:
    frame = signal_frame(n_rows=3000, seed=9, follow=0.7)
    source = tmp_path / "labelled.csv"
    frame.to_csv(source, header=False, index=False)

    result = score(input_file=source, output_file=tmp_path / "out.csv", threshold=threshold, batch_rows=200)

    y_true = frame.iloc[:, 14].to_numpy()
    expected = sklearn_metrics(y_true, expected_proba(champion, frame.iloc[:, :14].to_numpy()), threshold)
    logged = scored_run(result.run_id).data.metrics
    for name in config.METRIC_NAMES:
        assert logged[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name
        assert result.metrics[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name
    assert logged["rows"] == 3000
    assert scored_run(result.run_id).data.params["threshold"] == str(threshold)


@pytest.mark.slow
def test_float_features_with_missing_values_are_scored_row_by_row(champion, tmp_path) -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(0.5, 0.4, size=(800, 14)).astype(np.float32)
    features[rng.random(features.shape) < 0.05] = np.nan
    labels = rng.integers(0, 2, 800)
    source = tmp_path / "floats.csv"
    pd.DataFrame(np.column_stack([features, labels])).to_csv(source, header=False, index=False, na_rep="")

    result = score(input_file=source, output_file=tmp_path / "out.csv", batch_rows=BATCH_ROWS)

    proba = expected_proba(champion, pd.read_csv(source, header=None).iloc[:, :14].to_numpy())
    scored = pd.read_csv(tmp_path / "out.csv")
    np.testing.assert_array_equal(scored["y_proba"].to_numpy(), proba)
    for name, value in sklearn_metrics(labels, proba, 0.5).items():
        assert result.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


@pytest.mark.slow
def test_a_first_row_with_na_is_scored_not_taken_for_a_header(champion, tmp_path) -> None:
    source = tmp_path / "input.csv"
    lines = signal_frame(n_rows=50, seed=4).iloc[:, :14].to_csv(header=False, index=False).splitlines()
    lines[0] = "NA," + lines[0].split(",", 1)[1]
    source.write_text("\n".join(lines) + "\n")

    result = score(input_file=source, output_file=tmp_path / "out.csv")

    assert result.rows == 50
    proba = expected_proba(champion, pd.read_csv(source, header=None).to_numpy())
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "out.csv")["y_proba"].to_numpy(), proba)


@pytest.mark.slow
def test_the_alias_is_pinned_to_a_version_number_and_recorded(champion, tmp_path, monkeypatch) -> None:
    source = tmp_path / "input.csv"
    frame = signal_frame(n_rows=300, seed=2)
    frame.to_csv(source, header=False, index=False)
    # The alias moves to version 2 right after it was resolved, before the model is loaded:
    # the run must still load and record version 1.
    client = MlflowClient()
    original_load = mlflow.pyfunc.load_model

    def load_after_the_alias_moved(uri: str, *args, **kwargs):
        client.set_registered_model_alias(config.MODEL_NAME, config.ALIAS_CHAMPION, "2")
        return original_load(uri, *args, **kwargs)

    monkeypatch.setattr(mlflow.pyfunc, "load_model", load_after_the_alias_moved)
    result = score(input_file=source, output_file=tmp_path / "out.csv")

    assert str(client.get_model_version_by_alias(config.MODEL_NAME, config.ALIAS_CHAMPION).version) == "2"
    assert result.model.version == "1"
    run = scored_run(result.run_id)
    assert run.info.run_name == "score"
    assert run.data.tags[config.TAG_MODEL_VERSION] == "1"
    assert run.data.tags[config.TAG_MODEL_URI] == f"models:/{config.MODEL_NAME}/1"
    assert run.data.tags[TAG_MODEL_NAME] == config.MODEL_NAME
    assert run.data.params["model_uri"] == DEFAULT_MODEL_URI
    proba = expected_proba(champion, frame.iloc[:, :14].to_numpy())
    np.testing.assert_array_equal(pd.read_csv(tmp_path / "out.csv")["y_proba"].to_numpy(), proba)
    # The input is recorded by what was read: its sha256, size and rows.
    content = source.read_bytes()
    assert run.data.tags[config.TAG_DATA_DIGEST] == hashlib.sha256(content).hexdigest()
    assert run.data.tags[config.TAG_DATA_SIZE] == str(len(content))
    assert run.data.tags[config.TAG_DATA_ROWS] == "300"
    assert run.data.tags[config.TAG_DATA_FILE] == str(source)
    assert run.data.tags[TAG_OUTPUT_FILE] == str(tmp_path / "out.csv")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("uri", "version"),
    [(f"models:/{config.MODEL_NAME}/2", "2"), (f"models:/{config.MODEL_NAME}@champion", "1")],
)
def test_other_uris_are_used_as_given(uri, version, champion, tmp_path) -> None:
    source = tmp_path / "input.csv"
    signal_frame(n_rows=100).iloc[:, :14].to_csv(source, header=False, index=False)
    result = score(input_file=source, output_file=tmp_path / "out.csv", model_uri=uri)
    assert scored_run(result.run_id).data.tags[config.TAG_MODEL_VERSION] == version


@pytest.mark.slow
def test_a_logged_model_outside_the_registry_is_used_as_given(tracking_uri, tmp_path) -> None:
    booster = fit_booster()
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(
            booster, name="model", metadata={"features": FEATURES}, pip_requirements=["xgboost"]
        )
    source = tmp_path / "input.csv"
    frame = signal_frame(n_rows=100)
    frame.to_csv(source, header=False, index=False)
    result = score(input_file=source, output_file=tmp_path / "out.csv", model_uri=info.model_uri)
    tags = scored_run(result.run_id).data.tags
    assert tags[config.TAG_MODEL_URI] == info.model_uri
    assert config.TAG_MODEL_VERSION not in tags
    np.testing.assert_array_equal(
        pd.read_csv(tmp_path / "out.csv")["y_proba"], expected_proba(booster, frame.iloc[:, :14].to_numpy())
    )


@pytest.mark.slow
def test_features_come_from_the_metadata_when_the_model_lists_them(tracking_uri) -> None:
    booster = fit_booster()
    version = register_booster(booster, new_style=True)
    uri = f"models:/{config.MODEL_NAME}/{version}"
    assert mlflow.models.get_model_info(uri).signature is None
    assert model_features(uri) == FEATURES


def test_a_single_class_gives_scores_and_no_metrics(champion, tmp_path) -> None:
    frame = signal_frame(n_rows=200)
    frame.iloc[:, 14] = 1
    source = tmp_path / "ones.csv"
    frame.to_csv(source, header=False, index=False)
    result = score(input_file=source, output_file=tmp_path / "out.csv")
    run = scored_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert "single class" in run.data.tags[TAG_METRICS_SKIPPED]
    assert not set(config.METRIC_NAMES) & set(run.data.metrics)
    assert len(pd.read_csv(tmp_path / "out.csv")) == 200


def test_label_counts_across_batches_give_the_metrics_of_all_rows() -> None:
    rng = np.random.default_rng(0)
    values = rng.random(50)
    proba = values[rng.integers(0, 50, 10_000)]
    labels = (rng.random(10_000) < proba).astype(np.int8)
    counts = LabelCounts()
    for part in np.array_split(np.arange(10_000), 7):
        # Half the batches as distinct values plus an inverse, as the scorer passes them.
        if part[0] % 2:
            distinct, inverse = np.unique(proba[part], return_inverse=True)
            counts.add(distinct, labels[part], inverse)
        else:
            counts.add(proba[part], labels[part])
    assert len(counts.proba) == 50 and counts.counts.sum() == 10_000
    rows = counts.predictions(0.4)
    assert grouped_metrics(rows) == pytest.approx(
        classification_metrics(labels, (proba >= 0.4).astype(np.int8), proba)
    )


def temp_files(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("cell", "problem"),
    [("x", "non-numeric value 'x' at line 901, column 3"), ("7", "label 7 at line 901, expected 0 or 1")],
)
def test_a_bad_row_in_a_late_batch_leaves_no_output_and_a_failed_run(
    cell, problem, champion, tmp_path
) -> None:
    frame = signal_frame(n_rows=1000).astype(object)
    frame.iloc[900, 2 if cell == "x" else 14] = cell
    source = tmp_path / "late.csv"
    frame.to_csv(source, header=False, index=False)
    output = tmp_path / "out" / "scored.csv"
    output.parent.mkdir()

    with pytest.raises(DataError, match=problem):
        score(input_file=source, output_file=output, batch_rows=BATCH_ROWS)

    assert list(output.parent.iterdir()) == []
    runs = MlflowClient().search_runs(["0"], filter_string="attributes.run_name = 'score'")
    assert [run.info.status for run in runs] == ["FAILED"]
    assert problem in runs[0].data.tags[config.TAG_ERROR]


def test_a_failed_run_leaves_the_previous_output_untouched(champion, tmp_path) -> None:
    output = tmp_path / "scored.csv"
    output.write_text("yesterday's scores\n")
    source = tmp_path / "bad.csv"
    frame = signal_frame(n_rows=1000).astype(object)
    frame.iloc[700, 0] = "oops"
    frame.to_csv(source, header=False, index=False)
    with pytest.raises(DataError):
        score(input_file=source, output_file=output, batch_rows=BATCH_ROWS)
    assert output.read_text() == "yesterday's scores\n"
    assert temp_files(tmp_path) == []


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[object]:
    """Run score.py's command in-process; returns (exit code, ERROR lines, log records)."""
    previous = signal.getsignal(signal.SIGTERM)
    caplog.set_level(logging.INFO)

    def run(*args: str) -> tuple[int, list[str], list[logging.LogRecord]]:
        caplog.clear()
        try:
            score_cli.main(args=list(args), prog_name="score")
            code = 0
        except SystemExit as exited:
            code = exited.code
        errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
        return code, errors, list(caplog.records)

    yield run
    # run_cli turns SIGTERM into an exception for the script; the test process keeps its own.
    signal.signal(signal.SIGTERM, previous)


def bad_input(kind: str, tmp_path: Path) -> tuple[list[str], str]:
    """Arguments for one kind of bad input, and what its error line must say."""
    good = tmp_path / "good.csv"
    signal_frame(n_rows=60).to_csv(good, header=False, index=False)
    path = tmp_path / f"{kind}.csv"
    frame = signal_frame(n_rows=60).astype(object)
    expected = {
        "missing": "no such file",
        "relative_missing": "no such file (a relative path resolves against",
        "directory": "is a directory",
        "empty": "file is empty",
        "binary": "binary content",
        "too_narrow": "has 13 columns, expected 14 (the model's features) or 15 (features, then the label)",
        "too_wide": "has 16 columns, expected 14",
        "junk_cell": "non-numeric value 'abc' at line 8, column 4",
        "ragged": "ragged rows: expected 15 columns at line 12, found 14",
        "bad_label": "label 2 at line 10, expected 0 or 1",
        "missing_label": "missing label at line 5",
        "infinite": "infinite value at line 3, column 1",
        "header_only": "no data rows",
        "parquet_text_column": "string, expected numbers",
        "no_champion": "not found: Registered model alias champion not found",
        "unknown_model": "not found: Registered Model with name=nobody not found",
        "unknown_version": "could not be read: Model Version (name=training-model-psystock, version=99)",
        "output_is_input": "is the input file",
        "output_folder_missing": "does not exist",
        "output_is_directory": "is a directory, expected the path of the CSV to write",
        "threshold": "threshold must be between 0 and 1, got 1.5",
    }[kind]
    args = ["--input-file", str(path), "--output-file", str(tmp_path / "out.csv")]
    if kind == "relative_missing":
        args[1] = "no/such/file.csv"
    elif kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"\n\n")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "too_narrow":
        frame.iloc[:, :13].to_csv(path, header=False, index=False)
    elif kind == "too_wide":
        frame.assign(extra=0).to_csv(path, header=False, index=False)
    elif kind in ("junk_cell", "bad_label", "missing_label", "infinite"):
        row, column, value = {
            "junk_cell": (7, 3, "abc"),
            "bad_label": (9, 14, 2),
            "missing_label": (4, 14, ""),
            "infinite": (2, 0, "inf"),
        }[kind]
        frame.iloc[row, column] = value
        frame.to_csv(path, header=False, index=False)
    elif kind == "ragged":
        lines = good.read_text().splitlines()
        lines[11] = lines[11].rsplit(",", 1)[0]
        path.write_text("\n".join(lines) + "\n")
    elif kind == "header_only":
        path.write_text(",".join(f"c{i}" for i in range(15)) + "\n")
    elif kind == "parquet_text_column":
        path = tmp_path / "text.parquet"
        frame.rename(columns=str).astype({"3": str}).to_parquet(path)
        args[1] = str(path)
    elif kind == "no_champion":
        args[1] = str(good)
        MlflowClient().delete_registered_model_alias(config.MODEL_NAME, config.ALIAS_CHAMPION)
    elif kind == "unknown_model":
        args += ["--model-uri", "models:/nobody@champion"]
        args[1] = str(good)
    elif kind == "unknown_version":
        args += ["--model-uri", f"models:/{config.MODEL_NAME}/99"]
        args[1] = str(good)
    elif kind == "output_is_input":
        args[1] = args[3] = str(good)
    elif kind == "output_folder_missing":
        args[1], args[3] = str(good), str(tmp_path / "nope" / "out.csv")
    elif kind == "output_is_directory":
        args[1], args[3] = str(good), str(tmp_path)
    elif kind == "threshold":
        args[1] = str(good)
        args += ["--threshold", "1.5"]
    return args, expected


BAD_INPUTS = [
    "missing",
    "relative_missing",
    "directory",
    "empty",
    "binary",
    "too_narrow",
    "too_wide",
    "junk_cell",
    "ragged",
    "bad_label",
    "missing_label",
    "infinite",
    "header_only",
    "parquet_text_column",
    "no_champion",
    "unknown_model",
    "unknown_version",
    "output_is_input",
    "output_folder_missing",
    "output_is_directory",
    "threshold",
]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_gives_one_line_no_file_and_a_failed_run(kind, champion, cli, tmp_path) -> None:
    args, problem = bad_input(kind, tmp_path)
    before = {path.name for path in tmp_path.iterdir()}

    code, errors, records = cli(*args)

    assert code == 1
    assert len(errors) == 1, errors
    assert errors[0].startswith("score failed: ") and problem in errors[0], errors[0]
    # An expected failure: its message alone, no traceback.
    assert not any(record.exc_info for record in records)
    assert {path.name for path in tmp_path.iterdir()} - before == set()
    runs = MlflowClient().search_runs(["0"], filter_string="attributes.run_name = 'score'")
    assert [run.info.status for run in runs] == ["FAILED"]


def test_a_bad_option_is_one_line_and_exit_2(champion, cli, tmp_path) -> None:
    code, errors, _ = cli("--input-file", "x.csv", "--output-file", "y.csv", "--threshold", "high")
    assert code == 2
    assert len(errors) == 1 and "'high' is not a valid float" in errors[0]


def test_the_cli_scores_with_the_champion_by_default(champion, cli, tmp_path) -> None:
    source = tmp_path / "input.csv"
    signal_frame(n_rows=100).to_csv(source, header=False, index=False)
    code, errors, _ = cli("--input-file", str(source), "--output-file", str(tmp_path / "out.csv"))
    assert (code, errors) == (0, [])
    assert len(pd.read_csv(tmp_path / "out.csv")) == 100


def test_empty_paths_and_uris_are_parameter_errors(champion, tmp_path) -> None:
    with pytest.raises(PystockError, match="input_file must not be empty"):
        score(input_file="", output_file=tmp_path / "out.csv")
    with pytest.raises(PystockError, match="model_uri must not be empty"):
        score(input_file=tmp_path, output_file=tmp_path / "out.csv", model_uri=" ")


def test_mlproject_and_the_cli_agree_on_the_score_entry_point() -> None:
    check_entry_point("score")
    parameters = mlproject()["entry_points"]["score"]["parameters"]
    assert parameters["model_uri"]["default"] == DEFAULT_MODEL_URI
    assert parameters["threshold"]["default"] == config.THRESHOLD


@pytest.mark.slow
def test_the_score_process_does_not_import_plotting() -> None:
    code = "import sys, score; print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib'}))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
