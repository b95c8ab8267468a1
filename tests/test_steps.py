"""The step functions called directly against a real SQLite store: success and failure paths."""

from __future__ import annotations

from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split

from pystock_training import config
from pystock_training.champion import find_champion, score_champion
from pystock_training.errors import DataError, PystockError
from pystock_training.gate import BootstrapCI, paired_bootstrap_ci
from pystock_training.handoff import write_predictions
from pystock_training.report import evaluation_report
from pystock_training.steps.evaluate_model import compare_champion, evaluate_model, lift_ci
from pystock_training.steps.register_model import register_model, serving_check
from pystock_training.steps.train_model import train_model
from tests.conftest import signal_frame


def run_named(name: str) -> str:
    """The id of the newest run with this name."""
    runs = MlflowClient().search_runs(
        ["0"], filter_string=f"tags.`mlflow.runName` = '{name}'", order_by=["attributes.start_time DESC"]
    )
    return runs[0].info.run_id


def only_run(client: MlflowClient):
    runs = client.search_runs(["0"])
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow
def test_parquet_trains_evaluates_and_registers(tmp_path, tracking_uri) -> None:
    data_file = tmp_path / "upstream.parquet"
    signal_frame(n_rows=500).rename(columns=str).to_parquet(data_file)
    predictions_file = tmp_path / "out" / "predictions.csv"

    trained = train_model(data_file=data_file, predictions_file=predictions_file, num_boost_round=50)
    frame = pd.read_csv(predictions_file)
    # No champion yet: no champion columns.
    assert list(frame.columns) == ["y_test", "y_pred", "y_proba", "baseline_proba"]
    assert len(frame) == 165  # ceil(0.33 * 500), the last rows in file order
    labels = signal_frame(n_rows=500).iloc[-165:, -1].to_numpy()
    assert np.array_equal(frame["y_test"].to_numpy(), labels)

    metrics = evaluate_model(predictions_file=predictions_file)
    assert metrics["roc_auc"] > 0.8 > metrics["baseline_roc_auc"]
    assert not any(name.startswith("champion_") for name in metrics)

    result = register_model(train_run_id=trained.run_id, evaluate_run_id=run_named("evaluate_model"))
    assert result.promoted
    # Each step says where its time went, on its own run (benchmarks/scale.py reads these).
    for run_id, phases in (
        (trained.run_id, {"load", "fit", "predict", "champion", "write_predictions", "log_model"}),
        (run_named("evaluate_model"), {"read_predictions", "metrics", "plots"}),
        (run_named("register_model"), {"register", "serving_check", "promotion"}),
    ):
        logged = {k for k in mlflow.get_run(run_id).data.metrics if k.startswith("timing_")}
        assert logged == {f"timing_{phase}_s" for phase in phases | {"startup"}}
    version = result.version
    assert str(version.version) == "1"
    assert {config.ALIAS_CHAMPION, config.ALIAS_CHALLENGER} <= set(version.aliases)
    assert version.tags[config.TAG_DATA_DIGEST] == trained.data_digest
    assert version.tags[config.TAG_DECISION] == "promoted"
    assert {run.info.status for run in MlflowClient().search_runs(["0"])} == {"FINISHED"}

    # A second model on the same rows is compared with champion version 1, which travels in the CSV.
    train_model(data_file=data_file, predictions_file=predictions_file, num_boost_round=50, random_state=1)
    frame = pd.read_csv(predictions_file)
    assert list(frame.columns[4:]) == ["champion_proba", "champion_pred"]
    metrics = evaluate_model(predictions_file=predictions_file)
    assert metrics["champion_roc_auc"] == pytest.approx(metrics["roc_auc"], abs=0.05)
    assert metrics["diff_roc_auc_ci_low"] <= metrics["diff_roc_auc"] <= metrics["diff_roc_auc_ci_high"]


@pytest.mark.slow
def test_bad_parameters_fail_the_run_with_the_reason(tmp_path, tracking_uri, signal_csv) -> None:
    with pytest.raises(PystockError, match="learning_rate must be in"):
        train_model(data_file=signal_csv, predictions_file=tmp_path / "p.csv", learning_rate=0)
    run = only_run(MlflowClient())
    assert run.info.status == "FAILED"
    assert "learning_rate" in run.data.tags[config.TAG_ERROR]
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.slow
def test_missing_predictions_fail_evaluate(tmp_path, tracking_uri) -> None:
    missing = tmp_path / "none.csv"
    with pytest.raises(DataError, match="no such predictions file"):
        evaluate_model(predictions_file=missing)
    assert only_run(MlflowClient()).info.status == "FAILED"


@pytest.mark.slow
def test_unknown_train_run_registers_nothing(tracking_uri) -> None:
    with pytest.raises(PystockError, match="no such run"):
        register_model(train_run_id="0123456789abcdef0123456789abcdef", evaluate_run_id="x")
    assert MlflowClient().search_registered_models() == []
    assert only_run(MlflowClient()).info.status == "FAILED"


class NanModel(mlflow.pyfunc.PythonModel):
    """A model that loads fine but predicts garbage."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        return np.full(len(model_input), np.nan)


@pytest.mark.slow
def test_a_version_that_fails_the_serving_check_is_never_champion(tmp_path, tracking_uri, signal_csv) -> None:
    predictions = tmp_path / "p.csv"
    train_model(data_file=signal_csv, predictions_file=predictions, model_name="broken", num_boost_round=20)
    evaluate_model(predictions_file=predictions)
    # Register, in place of the trained booster, a model that loads but predicts NaN.
    example = pd.DataFrame(np.zeros((3, 14)), columns=[f"f{i}" for i in range(14)])
    with mlflow.start_run(run_name="nan-model") as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=NanModel(), input_example=example)
        mlflow.set_tag(config.TAG_MODEL_URI, info.model_uri)

    result = register_model(
        train_run_id=run.info.run_id, evaluate_run_id=run_named("evaluate_model"), model_name="broken"
    )
    assert not result.promoted
    assert [check.name for check in result.decision.checks if not check.passed] == ["serving"]
    version = MlflowClient().get_model_version("broken", "1")
    assert version.aliases == [config.ALIAS_CHALLENGER]
    assert "serving check failed" in version.description
    assert version.tags[config.TAG_DECISION] == "rejected"
    assert MlflowClient().get_run(run_named("register_model")).info.status == "FINISHED"


@pytest.mark.slow
def test_champion_moved_meanwhile_is_not_overwritten(tmp_path, tracking_uri, signal_csv) -> None:
    predictions = tmp_path / "p.csv"

    def train_and_evaluate(seed: int) -> tuple[str, str]:
        trained = train_model(
            data_file=signal_csv, predictions_file=predictions, num_boost_round=20, random_state=seed
        )
        evaluate_model(predictions_file=predictions)
        return trained.run_id, run_named("evaluate_model")

    train_id, evaluate_id = train_and_evaluate(0)
    assert register_model(train_run_id=train_id, evaluate_run_id=evaluate_id).promoted
    train_id, evaluate_id = train_and_evaluate(1)  # compared against champion version 1
    # Meanwhile another pipeline registers version 2 and makes it champion.
    model_uri = MlflowClient().get_run(train_id).data.tags[config.TAG_MODEL_URI]
    other = mlflow.register_model(model_uri, config.MODEL_NAME)
    MlflowClient().set_registered_model_alias(config.MODEL_NAME, config.ALIAS_CHAMPION, str(other.version))

    result = register_model(train_run_id=train_id, evaluate_run_id=evaluate_id)
    assert not result.promoted
    assert "champion moved from version 1 to 2" in " ".join(result.decision.reasons)
    champion = MlflowClient().get_model_version_by_alias(config.MODEL_NAME, config.ALIAS_CHAMPION)
    assert str(champion.version) == "2"
    assert str(result.version.version) == "3"
    assert config.ALIAS_CHALLENGER in result.version.aliases


@pytest.mark.slow
def test_serving_check_accepts_a_real_model(tracking_uri, signal_csv, tmp_path) -> None:
    trained = train_model(data_file=signal_csv, predictions_file=tmp_path / "p.csv", num_boost_round=20)
    version = mlflow.register_model(trained.model_uri, "checked")
    proba = serving_check("checked", version.version)
    assert proba.shape == (config.EXAMPLE_ROWS,)
    assert np.all((proba > 0) & (proba < 1))


@pytest.mark.slow
def test_a_changed_input_contract_is_rejected_unless_allowed_and_then_recorded(
    tmp_path, tracking_uri
) -> None:
    # Champion version 1 takes 5 features; the new table has 14. Its clients send 5 columns,
    # so promoting the new model silently would break every one of them.
    narrow = tmp_path / "narrow.csv"
    signal_frame(n_rows=300).iloc[:, 9:].to_csv(narrow, header=False, index=False)
    predictions = tmp_path / "p.csv"
    trained = train_model(data_file=narrow, predictions_file=predictions, num_boost_round=10)
    evaluate_model(predictions_file=predictions)
    assert register_model(train_run_id=trained.run_id, evaluate_run_id=run_named("evaluate_model")).promoted

    wide = tmp_path / "wide.csv"
    signal_frame(n_rows=300, seed=1).to_csv(wide, header=False, index=False)
    trained = train_model(data_file=wide, predictions_file=predictions, num_boost_round=10)
    tags = MlflowClient().get_run(trained.run_id).data.tags
    assert tags[config.TAG_CHAMPION_VERSION] == "1"
    change = "the champion takes 5 features (f0..f4), this model takes 14 features (f0..f13)"
    assert tags[config.TAG_CHAMPION_STATUS] == f"incompatible: {change}"
    assert "champion_proba" not in pd.read_csv(predictions).columns
    evaluate_model(predictions_file=predictions)
    evaluate_run_id = run_named("evaluate_model")

    client = MlflowClient()
    rejected = register_model(train_run_id=trained.run_id, evaluate_run_id=evaluate_run_id)
    assert not rejected.promoted and rejected.decision.is_final
    assert [check.name for check in rejected.decision.checks if not check.passed] == ["input_contract"]
    assert "allow_schema_change=true" in rejected.summary
    assert config.TAG_SCHEMA_CHANGE not in rejected.version.tags
    assert str(client.get_model_version_by_alias(config.MODEL_NAME, config.ALIAS_CHAMPION).version) == "1"
    # The registered model still describes the contract its clients call: the champion's.
    assert "last 5 days" in client.get_registered_model(config.MODEL_NAME).description

    allowed = register_model(
        train_run_id=trained.run_id, evaluate_run_id=evaluate_run_id, allow_schema_change=True
    )
    assert allowed.promoted
    assert allowed.version.tags[config.TAG_SCHEMA_CHANGE] == change
    champion = client.get_model_version_by_alias(config.MODEL_NAME, config.ALIAS_CHAMPION)
    assert str(champion.version) == str(allowed.version.version)
    assert "14 features `f0`..`f13`" in client.get_registered_model(config.MODEL_NAME).description

    # Compared with version 1's features, but the champion has moved to the 14-feature one: the
    # contract failure says nothing final about the new champion, so the run key stays open.
    moved = register_model(train_run_id=trained.run_id, evaluate_run_id=evaluate_run_id)
    failed = {check.name for check in moved.decision.checks if not check.passed}
    assert failed == {"input_contract", "compare_and_set"}
    assert not moved.decision.is_final
    assert moved.version.tags[config.TAG_VERDICT] == "retry"


@pytest.mark.slow
def test_a_champion_that_cannot_be_scored_fails_training_instead_of_being_skipped(
    tmp_path, tracking_uri, signal_csv
) -> None:
    predictions = tmp_path / "p.csv"
    trained = train_model(data_file=signal_csv, predictions_file=predictions, num_boost_round=10)
    evaluate_model(predictions_file=predictions)
    assert register_model(train_run_id=trained.run_id, evaluate_run_id=run_named("evaluate_model")).promoted
    # The champion's files vanish (an artifact store hiccup): skipping the comparison would let
    # any candidate take over, so training fails and the next run retries.
    for model_file in (tmp_path / "mlruns").rglob("MLmodel"):
        model_file.unlink()
    with pytest.raises(
        PystockError, match="champion models:/training-model-psystock/1 could not be"
    ) as error:
        train_model(data_file=signal_csv, predictions_file=predictions, num_boost_round=10, random_state=3)
    assert "\n" not in str(error.value)
    assert MlflowClient().get_run(run_named("train_model")).info.status == "FAILED"


class _FailingModel(mlflow.pyfunc.PythonModel):
    """A champion that loads but cannot predict, with a message of several lines."""

    def predict(self, context, model_input, params=None):
        raise ValueError("the first line\nthe second line\nthe third line")


@pytest.mark.slow
def test_a_champion_whose_prediction_fails_is_reported_in_one_line(tracking_uri) -> None:
    n_rows = config.MIN_ROWS_COMPARED
    features = pd.DataFrame(np.zeros((n_rows, 14), dtype=np.float64), columns=[f"f{i}" for i in range(14)])
    with mlflow.start_run():
        mlflow.log_params({"split": "time", "test_size": 0.33, "random_state": 42})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_FailingModel(),
            signature=infer_signature(features, np.zeros(n_rows)),
            pip_requirements=[],
        )
    # Every row counts as clean here, so it is scored.
    version = mlflow.register_model(info.model_uri, config.MODEL_NAME, tags={config.TAG_DATA_DIGEST: "other"})
    MlflowClient().set_registered_model_alias(config.MODEL_NAME, config.ALIAS_CHAMPION, version.version)
    with pytest.raises(PystockError) as error:
        score_champion(
            find_champion(config.MODEL_NAME), features, np.arange(n_rows) % 2, np.ones(n_rows, dtype=bool)
        )
    assert str(error.value) == (
        f"champion models:/{config.MODEL_NAME}/1 could not be scored: ValueError: the first line"
    )


@pytest.mark.slow
def test_a_champion_that_trained_on_these_rows_is_not_compared(tmp_path, tracking_uri, signal_csv) -> None:
    predictions = tmp_path / "p.csv"
    trained = train_model(
        data_file=signal_csv, predictions_file=predictions, split="random", num_boost_round=10
    )
    evaluate_model(predictions_file=predictions)
    assert register_model(train_run_id=trained.run_id, evaluate_run_id=run_named("evaluate_model")).promoted
    # Same file, another shuffle: most of the new test rows were the champion's training rows,
    # and the few in its test part are too few to compare on.
    trained = train_model(
        data_file=signal_csv, predictions_file=predictions, split="random", random_state=7, num_boost_round=10
    )
    n_rows = len(pd.read_csv(signal_csv, header=None))
    _, champion_test = train_test_split(np.arange(n_rows), test_size=config.TEST_SIZE, random_state=42)
    _, candidate_test = train_test_split(np.arange(n_rows), test_size=config.TEST_SIZE, random_state=7)
    shared = len(set(champion_test) & set(candidate_test))
    assert 0 < shared < config.MIN_ROWS_COMPARED
    tags = MlflowClient().get_run(trained.run_id).data.tags
    assert tags[config.TAG_CHAMPION_STATUS].startswith(
        f"not compared: only {shared} of {len(candidate_test)} test rows are rows it never trained on"
    )
    assert tags[config.TAG_CHAMPION_ROWS_COMPARED] == "0"
    # The identical split is the same holdout: compared on every test row.
    trained = train_model(
        data_file=signal_csv, predictions_file=predictions, split="random", num_boost_round=5
    )
    tags = MlflowClient().get_run(trained.run_id).data.tags
    assert tags[config.TAG_CHAMPION_STATUS] == "scored"
    assert tags[config.TAG_CHAMPION_ROWS_COMPARED] == str(len(candidate_test))


@pytest.mark.slow
def test_a_wrong_evaluate_run_registers_nothing(tmp_path, tracking_uri, signal_csv) -> None:
    trained = train_model(data_file=signal_csv, predictions_file=tmp_path / "p.csv", num_boost_round=10)
    with pytest.raises(PystockError, match="has no roc_auc or baseline_roc_auc metric"):
        register_model(train_run_id=trained.run_id, evaluate_run_id=trained.run_id)
    assert MlflowClient().search_registered_models() == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"min_score": float("nan")}, "min_score must be a finite"),
        ({"max_regression": -1.0}, "max_regression"),
    ],
)
def test_bad_gate_parameters_register_nothing(kwargs, problem, tmp_path, tracking_uri, signal_csv) -> None:
    predictions = tmp_path / "p.csv"
    trained = train_model(data_file=signal_csv, predictions_file=predictions, num_boost_round=10)
    evaluate_model(predictions_file=predictions)
    with pytest.raises(PystockError, match=problem):
        register_model(train_run_id=trained.run_id, evaluate_run_id=run_named("evaluate_model"), **kwargs)
    assert MlflowClient().search_registered_models() == []


# evaluate_model: the lift's CI and the champion compared on the rows it never trained on.


def scored_rows(n_rows: int = 600, champion_from: int | None = None, seed: int = 0):
    """Labels, a useful model's probabilities and, from row ``champion_from`` on, a champion's."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n_rows)
    y_proba = 1 / (1 + np.exp(-(0.8 * (2 * y - 1) + rng.normal(size=n_rows))))
    champion = None
    if champion_from is not None:
        champion = 1 / (1 + np.exp(-(0.5 * (2 * y - 1) + rng.normal(size=n_rows))))
        champion[:champion_from] = np.nan
    return y, y_proba, champion


def as_frame(y, y_proba, champion) -> pd.DataFrame:
    """What read_predictions returns for these rows (champion cells NaN where empty)."""
    frame = pd.DataFrame({"y_test": y, "y_pred": (y_proba >= 0.5).astype(np.int8), "y_proba": y_proba})
    frame["champion_proba"] = champion
    frame["champion_pred"] = np.where(np.isnan(champion), np.nan, champion >= 0.5)
    return frame


def compare(y, y_proba, champion, metric: str = "roc_auc"):
    y_pred = (y_proba >= 0.5).astype(np.int8)
    model = {metric: roc_auc_score(y, y_proba) if metric == "roc_auc" else accuracy_score(y, y_pred)}
    return compare_champion(as_frame(y, y_proba, champion), y, y_pred, y_proba, metric, model)


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["roc_auc", "accuracy"])
def test_the_champion_and_the_candidate_are_scored_on_the_same_clean_rows(metric) -> None:
    y, y_proba, champion = scored_rows(champion_from=250)
    clean = slice(250, None)
    y_pred = (y_proba >= 0.5).astype(np.int8)

    result = compare(y, y_proba, champion, metric)

    score = roc_auc_score if metric == "roc_auc" else accuracy_score
    candidate, scored = (y_proba, champion) if metric == "roc_auc" else (y_pred, champion >= 0.5)
    assert result.rows_compared == 350 and not result.skipped
    assert result.metrics[metric] == pytest.approx(score(y[clean], scored[clean]))
    assert result.ci.diff == pytest.approx(score(y[clean], candidate[clean]) - score(y[clean], scored[clean]))
    assert (result.ci.n_rows, result.ci.test_rows, result.ci.block_length) == (350, 600, 15)
    assert result.ci.low < result.ci.diff < result.ci.high


def test_a_champion_on_every_row_is_compared_as_before() -> None:
    y, y_proba, champion = scored_rows(champion_from=0)

    result = compare(y, y_proba, champion)

    reference = paired_bootstrap_ci(y, y_proba, champion, "roc_auc")
    # The point comes from sklearn here and from the bootstrap's own ROC AUC there: equal to rounding.
    assert replace(result.ci, diff=reference.diff) == reference
    assert result.ci.diff == pytest.approx(reference.diff, abs=1e-12)
    assert result.ci.test_rows == result.ci.n_rows == result.rows_compared == 600


@pytest.mark.parametrize(
    ("champion_from", "labels", "why"),
    [
        (600, None, "only 0 of 600 test rows are rows it never trained on"),
        (599, None, "only 1 of 600 test rows are rows it never trained on"),
        (
            590,
            np.array([0] * 590 + [1] * 10),
            "the 10 of 600 test rows it never trained on hold a single class",
        ),
    ],
)
def test_too_few_clean_rows_skip_the_comparison_with_a_warning(caplog, champion_from, labels, why) -> None:
    y, y_proba, champion = scored_rows(champion_from=champion_from)
    y = y if labels is None else labels

    result = compare(y, y_proba, champion)

    assert (result.metrics, result.ci, result.skipped) == (None, None, why)
    assert f"champion not compared: {why}" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("metric", "baseline"),
    [("roc_auc", lambda y: roc_auc_score(y, np.full(len(y), 0.45))), ("accuracy", lambda y: np.mean(y == 0))],
)
def test_the_lift_ci_pairs_the_model_with_the_constant_baseline(metric, baseline) -> None:
    y, y_proba, _ = scored_rows()
    y_pred = (y_proba >= 0.5).astype(np.int8)
    model = roc_auc_score(y, y_proba) if metric == "roc_auc" else accuracy_score(y, y_pred)

    # At a prior of 0.45 the baseline says 0.45, and 0 as a label.
    result = lift_ci(y, y_pred, y_proba, 0.45, metric, point=model - baseline(y))

    reference = paired_bootstrap_ci(
        y,
        y_proba if metric == "roc_auc" else y_pred,
        np.full(600, 0.45 if metric == "roc_auc" else 0.0),
        metric,
    )
    assert replace(result, diff=reference.diff) == reference
    assert result.diff == pytest.approx(reference.diff, abs=1e-12)
    assert 0 < result.low < result.diff < result.high


def report_with(lift_low: float, comparison=None, skipped: str = "") -> str:
    results = {"model": {"roc_auc": 0.6}, "baseline": {"roc_auc": 0.5}, "lift": {"roc_auc": 0.1}}
    lift = BootstrapCI("roc_auc", 0.1, lift_low, 0.2, 1000, 600, 600, block_length=15, test_rows=600)
    if comparison is not None:
        results["champion"] = {"roc_auc": 0.58}
    return evaluation_report(results, 600, comparison, lift=lift, champion_skipped=skipped)


def test_the_report_says_whether_the_lift_is_significant() -> None:
    assert (
        "+0.1000, 95% CI [+0.0100, +0.2000] from a paired bootstrap of 1000 resamples of 600 rows in "
        "blocks of 15 consecutive rows (seed 0): **significant**" in report_with(0.01)
    )
    assert "**not significant** (the interval does not lie entirely above 0)" in report_with(-0.01)
    assert "**not significant**" in report_with(0.0)


def test_the_report_says_how_many_rows_the_champion_was_compared_on() -> None:
    partial = BootstrapCI("roc_auc", 0.02, -0.01, 0.05, 1000, 350, 350, block_length=15, test_rows=600)
    report = report_with(0.01, partial)
    assert "compared on 350 of 600 test rows the champion never trained on: +0.0200" in report
    assert "The champion column above is scored on those rows only" in report
    complete = BootstrapCI("roc_auc", 0.02, -0.01, 0.05, 1000, 600, 600, block_length=15, test_rows=600)
    assert "scored on those rows only" not in report_with(0.01, complete)
    assert "The champion was not compared: only 3 of 600." in report_with(0.01, skipped="only 3 of 600")


def evaluation_of(run_id: str) -> tuple[dict, str]:
    return (
        mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation.json"),
        mlflow.artifacts.load_text(f"runs:/{run_id}/evaluation_report.md"),
    )


@pytest.mark.slow
def test_evaluate_logs_the_lift_ci_and_the_clean_row_comparison(tmp_path, tracking_uri) -> None:
    predictions = tmp_path / "p.csv"
    y, y_proba, champion = scored_rows(champion_from=250)
    write_predictions(predictions, y, y_proba, 0.5, 0.45, champion_proba=champion)

    metrics = evaluate_model(predictions_file=predictions)
    evaluation, report = evaluation_of(run_named("evaluate_model"))

    # The candidate's own metrics on every test row; the champion and the difference on the clean ones.
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, y_proba))
    assert metrics["champion_roc_auc"] == pytest.approx(roc_auc_score(y[250:], champion[250:]))
    assert metrics["champion_rows_compared"] == 350
    comparison = BootstrapCI(**evaluation["champion_comparison"])
    assert (comparison.n_rows, comparison.test_rows) == (350, 600)
    assert (comparison.diff, comparison.low, comparison.high) == (
        metrics["diff_roc_auc"],
        metrics["diff_roc_auc_ci_low"],
        metrics["diff_roc_auc_ci_high"],
    )
    lift = BootstrapCI(**evaluation["lift_comparison"])
    assert (lift.diff, lift.low, lift.high) == (
        metrics["lift_roc_auc"],
        metrics["lift_roc_auc_ci_low"],
        metrics["lift_roc_auc_ci_high"],
    )
    assert (lift.n_rows, lift.block_length) == (600, 15)
    assert "champion_skipped" not in evaluation
    assert "compared on 350 of 600 test rows the champion never trained on" in report
    assert "Lift over the baseline on roc_auc" in report and "**significant**" in report


@pytest.mark.slow
def test_evaluate_skips_a_champion_with_too_few_clean_rows(tmp_path, tracking_uri, caplog) -> None:
    predictions = tmp_path / "p.csv"
    y, y_proba, champion = scored_rows(champion_from=599)
    write_predictions(predictions, y, y_proba, 0.5, 0.45, champion_proba=champion)

    metrics = evaluate_model(predictions_file=predictions, gate_metric="log_loss")
    evaluation, report = evaluation_of(run_named("evaluate_model"))

    why = "only 1 of 600 test rows are rows it never trained on"
    assert f"champion not compared: {why}" in caplog.text
    assert {name for name in metrics if name.startswith(("champion_", "diff_"))} == {"champion_rows_compared"}
    assert metrics["lift_log_loss_ci_low"] <= metrics["lift_log_loss"] <= metrics["lift_log_loss_ci_high"]
    assert evaluation["champion_comparison"] is None
    assert evaluation["champion_skipped"] == why
    assert f"The champion was not compared: {why}." in report
    assert MlflowClient().get_run(run_named("evaluate_model")).info.status == "FINISHED"
