"""model.fit: a binary:logistic booster, stopped early on the validation rows, cut to its best round."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from pystock_training.model import fit, predict_proba
from pystock_training.params import TrainParams
from tests.conftest import PROJECT_ROOT


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


# Runs in a child process, because the failure it guards against aborts the process. A profile
# hook sends SIGTERM at the moment XGBoost calls back into Python to hand over the data, so the
# signal lands inside the ctypes callback every time, not by luck of timing.
SIGTERM_DURING_CALLBACK = """
import signal, sys
import numpy as np, pandas as pd
from pystock_training.model import fit
from pystock_training.params import TrainParams
from pystock_training.tracking import Terminated, raise_on_sigterm

raise_on_sigterm()
rng = np.random.default_rng(0)
x = pd.DataFrame(rng.integers(0, 2, size=(500, 14)).astype(np.int8))
y = rng.integers(0, 2, 500).astype(np.float32)
sent = []

def send_sigterm_in_callback(frame, event, _arg):
    if event == "call" and frame.f_code.co_name == "_next_wrapper" and not sent:
        sent.append(frame.f_code.co_qualname)
        signal.raise_signal(signal.SIGTERM)

sys.setprofile(send_sigterm_in_callback)
try:
    fit(x, y, x, y, TrainParams(num_boost_round=5, early_stopping_rounds=0))
except Terminated as exc:
    sys.setprofile(None)
    print("raised", exc, "after a signal in", sent)
    sys.exit(3)
sys.setprofile(None)
print("finished after a signal in", sent)
"""


@pytest.mark.slow
def test_sigterm_while_xgboost_reads_the_data_ends_in_terminated_not_a_crash() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_DURING_CALLBACK],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Exit 3 is the script's own: fit raised Terminated (after the matrices were built), and the
    # signal was sent from inside XGBoost's data callback. A crash exits by signal (negative).
    assert result.returncode == 3, (result.returncode, result.stdout, result.stderr[-3000:])
    assert "raised terminated by SIGTERM after a signal in ['DataIter._next_wrapper']" in result.stdout
    assert "Exception ignored" not in result.stderr


def test_the_requirements_check_the_model_skips_is_the_one_mlflow_runs() -> None:
    # log_model skips MLflow's check of the pip requirements against this environment (its
    # requirements are this environment's versions). The check must be a function of
    # mlflow.utils.environment that saving a model calls by that name, or skipping it would
    # silently do nothing; and it must be back in place afterwards.
    from mlflow.utils import environment

    from pystock_training import model

    check = getattr(environment, model.REQUIREMENTS_CHECK)
    assert callable(check)
    assert model.REQUIREMENTS_CHECK in environment._process_pip_requirements.__code__.co_names
    with model._requirements_check_skipped():
        assert getattr(environment, model.REQUIREMENTS_CHECK) is not check
        assert getattr(environment, model.REQUIREMENTS_CHECK)(["xgboost==0.0.1"]) is None
    assert getattr(environment, model.REQUIREMENTS_CHECK) is check


@pytest.mark.slow
def test_a_logged_model_pins_the_installed_versions(tracking_uri) -> None:
    # The requirements MLflow writes with its own check skipped: every package at the version
    # installed here, read from the package metadata.
    from importlib.metadata import version

    import mlflow

    from pystock_training.model import log_model

    x, y = frame(200, 0, signal=True)
    booster = fit(x, y, x, y, TrainParams(num_boost_round=5, early_stopping_rounds=0))
    with mlflow.start_run():
        info = log_model(booster, "model", x.iloc[:5].astype(np.float64))
    model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri))
    lines = (model_dir / "requirements.txt").read_text().split()
    for name in ("mlflow", "xgboost", "numpy", "pandas", "scikit-learn", "scipy"):
        assert f"{name}=={version(name)}" in lines
