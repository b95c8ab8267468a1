"""The lift over the baseline carries its CI into decision.json and the one-line summary."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from pystock_training import config
from pystock_training.steps.evaluate_model import evaluate_model
from pystock_training.steps.register_model import register_model
from pystock_training.steps.train_model import train_model
from tests.conftest import signal_frame


def newest_run(name: str) -> str:
    return (
        MlflowClient()
        .search_runs(["0"], f"tags.`mlflow.runName` = '{name}'", order_by=["attributes.start_time DESC"])[0]
        .info.run_id
    )


@pytest.mark.slow
@pytest.mark.parametrize(("follow", "significance"), [(0.9, "significant"), (0.5, "not significant")])
def test_the_lift_ci_is_in_the_decision_record_and_the_summary(
    follow: float, significance: str, tmp_path: Path, tracking_uri
) -> None:
    # follow=0.9: the label copies a feature, a clear skill; 0.5: coin flips, none to show.
    data = tmp_path / "data.csv"
    signal_frame(900, seed=0, follow=follow).to_csv(data, header=False, index=False)
    predictions = tmp_path / "p.csv"
    trained = train_model(data_file=data, predictions_file=predictions, num_boost_round=20)
    evaluate_model(predictions_file=predictions)
    evaluation = mlflow.artifacts.load_dict(f"runs:/{newest_run('evaluate_model')}/evaluation.json")
    lift = evaluation["lift_comparison"]

    result = register_model(
        train_run_id=trained.run_id, evaluate_run_id=newest_run("evaluate_model"), min_score=0.0
    )

    decision = mlflow.artifacts.load_dict(f"runs:/{newest_run('register_model')}/{config.DECISION_ARTIFACT}")
    baseline = {check["name"]: check for check in decision["checks"]}["baseline"]["values"]
    assert (baseline["lift_ci_low"], baseline["lift_ci_high"]) == (lift["low"], lift["high"])
    assert baseline["lift_significant"] == ("yes" if significance == "significant" else "no")
    assert (lift["low"] > 0) == (significance == "significant")
    assert np.isclose(baseline["lift"], baseline["value"] - baseline["baseline"])
    expected = f"lift CI [{lift['low']:+.3f}, {lift['high']:+.3f}]: {significance};"
    assert expected in result.summary
    assert expected in decision["summary"]
