"""Distinct rows: merging repeated rows must change the cost, never the model or its predictions."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pandas as pd
import pytest

from pystock_training import config
from pystock_training.distinct import MAX_CODES, column_range, distinct_rows
from pystock_training.model import fit, predict_proba
from pystock_training.params import TrainParams
from pystock_training.steps.evaluate_model import evaluate_model
from pystock_training.steps.register_model import register_model
from pystock_training.steps.train_model import train_model


def flags(n_rows: int, n_features: int, seed: int, values: tuple[int, ...] = (0, 1)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    matrix = rng.choice(np.array(values, dtype=np.int8), size=(n_rows, n_features))
    return pd.DataFrame(matrix, columns=[f"f{i}" for i in range(n_features)])


def noisy_labels(features: pd.DataFrame, seed: int) -> np.ndarray:
    """Labels that follow f0 and f1 with noise, so early stopping has something to find."""
    rng = np.random.default_rng(seed)
    matrix = features.to_numpy()
    chance = 0.3 + 0.25 * (matrix[:, 0] > 0) + 0.15 * (matrix[:, 1] > 0)
    return (rng.random(len(features)) < chance).astype(np.int8)


def test_distinct_rows_reproduce_every_row_count_and_mean_label() -> None:
    # Three values including a negative one, so the mixed-radix code and its decoding are exercised.
    features = flags(5_000, 5, seed=0, values=(-3, 0, 2))
    labels = noisy_labels(features, seed=1)

    distinct = distinct_rows(features)

    assert distinct.inverse is not None
    matrix = features.to_numpy()
    assert len(distinct.rows) == len(np.unique(matrix, axis=0))
    assert len(np.unique(distinct.rows.to_numpy(), axis=0)) == len(distinct.rows)
    assert list(distinct.rows.columns) == list(features.columns)
    assert distinct.rows.dtypes.eq(np.int8).all()
    # Every original row is its distinct row, in the original order.
    np.testing.assert_array_equal(distinct.expand(distinct.rows.to_numpy()), matrix)
    weights = distinct.weights
    assert weights.sum() == len(features)
    expected = (
        features.assign(label=labels)
        .groupby(list(features.columns), sort=False)["label"]
        .agg(["mean", "size"])
    )
    for row, weight, mean in zip(
        distinct.rows.itertuples(index=False), weights, distinct.labels(labels), strict=True
    ):
        assert expected.loc[tuple(row), "size"] == weight
        assert expected.loc[tuple(row), "mean"] == pytest.approx(mean, abs=1e-12)


@pytest.mark.parametrize(
    ("features", "why"),
    [
        (flags(5_000, 3, seed=2).astype(np.float32), "float features"),
        (flags(100, 14, seed=3), "rows hardly repeat"),
        (flags(50_000, 4, seed=4, values=tuple(range(-128, 128))), "code space too big"),
    ],
)
def test_rows_are_kept_as_they_are_when_merging_does_not_apply(features: pd.DataFrame, why: str) -> None:
    if why == "code space too big":
        assert MAX_CODES < 256**4
    distinct = distinct_rows(features)

    assert distinct.inverse is None, why
    assert distinct.rows is features
    assert distinct.weights is None
    labels = np.arange(len(features)) % 2
    assert distinct.labels(labels) is labels
    values = np.arange(len(features))
    np.testing.assert_array_equal(distinct.expand(values), values)


@pytest.mark.slow
def test_training_on_distinct_rows_gives_the_model_of_all_rows() -> None:
    # 8 flags: 256 possible rows, so 40,000 rows merge about 150-fold.
    x_train, x_valid = flags(40_000, 8, seed=5), flags(10_000, 8, seed=6)
    y_train, y_valid = noisy_labels(x_train, seed=7), noisy_labels(x_valid, seed=8)
    params = TrainParams(num_boost_round=300, max_depth=3, learning_rate=0.3, early_stopping_rounds=10)

    every_row = fit(x_train, y_train, x_valid, y_valid, params)
    train, valid = distinct_rows(x_train), distinct_rows(x_valid)
    assert train.inverse is not None
    assert valid.inverse is not None
    assert len(train.rows) <= 256
    merged = fit(
        train.rows,
        train.labels(y_train),
        valid.rows,
        valid.labels(y_valid),
        params,
        w_train=train.weights,
        w_valid=valid.weights,
    )

    # Early stopping found a round inside the budget, and the same one both ways.
    assert 1 < every_row.num_boosted_rounds() < 300
    assert merged.num_boosted_rounds() == every_row.num_boosted_rounds()
    probe = flags(2_000, 8, seed=9)
    np.testing.assert_allclose(predict_proba(merged, probe), predict_proba(every_row, probe), rtol=1e-5)


@pytest.mark.slow
def test_train_model_on_repeated_rows_predicts_every_row_as_the_champion_would(
    tmp_path, tracking_uri
) -> None:
    features = flags(30_000, 6, seed=10)
    frame = features.assign(label=noisy_labels(features, seed=11))
    data_file = tmp_path / "repeated.csv"
    frame.to_csv(data_file, header=False, index=False)
    predictions_file = tmp_path / "predictions.csv"
    n_test = math.ceil(config.TEST_SIZE * len(frame))
    x_test = features.iloc[-n_test:].reset_index(drop=True)

    first = train_model(data_file=data_file, predictions_file=predictions_file, num_boost_round=50)
    run = mlflow.get_run(first.run_id)
    assert run.data.metrics["fit_rows"] <= 64 < run.data.metrics["train_rows"]
    written = pd.read_csv(predictions_file)
    assert len(written) == n_test
    np.testing.assert_array_equal(written["y_test"], frame["label"].to_numpy()[-n_test:])
    # The probabilities written for every test row are the logged model's, row by row.
    logged = mlflow.pyfunc.load_model(first.model_uri)
    np.testing.assert_allclose(written["y_proba"], logged.predict(x_test.astype(np.float64)), rtol=1e-6)
    assert {f"timing_{phase}_s" for phase in ("load", "fit", "predict", "log_model")} <= set(run.data.metrics)

    # With that model as champion, its probabilities travel in the CSV for every test row too.
    evaluate_model(predictions_file=predictions_file)
    evaluate_run_id = mlflow.last_active_run().info.run_id
    assert register_model(train_run_id=first.run_id, evaluate_run_id=evaluate_run_id).promoted
    train_model(data_file=data_file, predictions_file=predictions_file, num_boost_round=50, random_state=1)
    written = pd.read_csv(predictions_file)
    np.testing.assert_allclose(
        written["champion_proba"], logged.predict(x_test.astype(np.float64)), rtol=1e-6
    )


@pytest.mark.parametrize("n_rows", [1, 63, 64, 65, 1000, 4099])
@pytest.mark.parametrize("layout", ["c", "fortran", "every_other_row"])
def test_column_range_is_numpys_min_and_max_down_the_columns(n_rows: int, layout: str) -> None:
    matrix = np.random.default_rng(n_rows).integers(-128, 128, size=(n_rows, 14)).astype(np.int8)
    if layout == "fortran":
        matrix = np.asfortranarray(matrix)
    elif layout == "every_other_row":
        matrix = matrix[::2]
    low, high = column_range(matrix)
    np.testing.assert_array_equal(low, matrix.min(axis=0))
    np.testing.assert_array_equal(high, matrix.max(axis=0))
