"""model.fit: a binary:logistic booster, stopped early on the validation rows, cut to its best round."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb

from pystock_training.model import fit, predict_proba
from pystock_training.params import TrainParams


def frame(n_rows: int, seed: int, signal: bool) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(n_rows, 4)).astype(np.float32)
    y = x[:, 0].astype(np.int8) if signal else rng.integers(0, 2, n_rows).astype(np.int8)
    return pd.DataFrame(x, columns=[f"f{i}" for i in range(4)]), y


def test_predictions_are_probabilities_not_regression_outputs() -> None:
    x, y = frame(300, 0, signal=True)
    booster = fit(x, y, x, y, TrainParams(num_boost_round=50, early_stopping_rounds=0))
    proba = predict_proba(booster, x)
    assert np.all((proba > 0) & (proba < 1))
    assert proba[y == 1].min() > 0.5 > proba[y == 0].max()


def test_early_stopping_watches_the_validation_rows_and_keeps_only_the_best_rounds() -> None:
    # Training rows follow f0; validation rows are pure noise, so more rounds only hurt there.
    x_train, y_train = frame(400, 1, signal=True)
    x_valid, y_valid = frame(400, 2, signal=False)
    params = TrainParams(num_boost_round=200, learning_rate=0.3, early_stopping_rounds=5)
    booster = fit(x_train, y_train, x_valid, y_valid, params)
    assert booster.num_boosted_rounds() < 20

    # With a validation set that agrees with training, it keeps going.
    x_same, y_same = frame(400, 3, signal=True)
    longer = fit(x_train, y_train, x_same, y_same, params)
    assert longer.num_boosted_rounds() > booster.num_boosted_rounds()


def test_the_cut_booster_predicts_what_the_best_iteration_predicted() -> None:
    x_train, y_train = frame(400, 4, signal=True)
    x_valid, y_valid = frame(400, 5, signal=False)
    params = TrainParams(num_boost_round=100, learning_rate=0.3, early_stopping_rounds=5)
    dtrain = xgb.DMatrix(x_train, label=y_train)
    full = xgb.train(
        params.booster_params(),
        dtrain,
        num_boost_round=100,
        evals=[(xgb.DMatrix(x_valid, label=y_valid), "validation")],
        early_stopping_rounds=5,
        verbose_eval=False,
    )
    cut = fit(x_train, y_train, x_valid, y_valid, params)
    assert cut.num_boosted_rounds() == full.best_iteration + 1
    expected = full.predict(xgb.DMatrix(x_valid), iteration_range=(0, full.best_iteration + 1))
    np.testing.assert_allclose(predict_proba(cut, x_valid), expected, rtol=1e-6)


def test_no_early_stopping_trains_every_round() -> None:
    x, y = frame(200, 6, signal=False)
    booster = fit(x, y, x, y, TrainParams(num_boost_round=17, early_stopping_rounds=0))
    assert booster.num_boosted_rounds() == 17
