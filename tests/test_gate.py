"""The promotion gate's rules and its paired bootstrap, on hand-made numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from pystock_training.gate import (
    BootstrapCI,
    ChampionComparison,
    Check,
    _fast_roc_auc,
    _resample_scorer,
    better,
    decide,
    oriented_diff,
    paired_bootstrap_ci,
    uses_probabilities,
)
from pystock_training.params import GateParams, check_gate_params

PARAMS = GateParams(gate_metric="roc_auc", min_score=0.5, max_regression=0.01)
SERVING_OK = Check("serving", True, "serving check passed")


def ci(low: float, high: float, diff: float | None = None) -> BootstrapCI:
    middle = (low + high) / 2 if diff is None else diff
    return BootstrapCI("roc_auc", middle, low, high, 1000, 500, 500)


def champion(low: float, high: float) -> ChampionComparison:
    return ChampionComparison(version="1", status="scored", value=0.6, ci=ci(low, high))


NO_CHAMPION = ChampionComparison(version=None, status="none")


@pytest.mark.parametrize(
    ("metric", "value", "than", "expected"),
    [
        ("roc_auc", 0.6, 0.5, True),
        ("roc_auc", 0.5, 0.5, False),  # equal is not better
        ("roc_auc", 0.4, 0.5, False),
        ("log_loss", 0.6, 0.69, True),  # lower is better
        ("log_loss", 0.7, 0.69, False),
    ],
)
def test_better_knows_each_metrics_direction(metric, value, than, expected) -> None:
    assert better(metric, value, than) is expected


def test_oriented_diff_is_positive_when_the_candidate_is_better() -> None:
    assert oriented_diff("roc_auc", 0.7, 0.6) == pytest.approx(0.1)
    assert oriented_diff("log_loss", 0.6, 0.7) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("candidate", "baseline", "champ", "serving", "promote", "failed"),
    [
        (0.60, 0.50, NO_CHAMPION, SERVING_OK, True, []),
        (0.49, 0.50, NO_CHAMPION, SERVING_OK, False, ["min_score", "baseline"]),
        (0.50, 0.50, NO_CHAMPION, SERVING_OK, False, ["min_score", "baseline"]),  # not *above* 0.5
        (0.55, 0.56, NO_CHAMPION, SERVING_OK, False, ["baseline"]),
        # Entirely below -max_regression: significantly worse.
        (0.60, 0.50, champion(-0.08, -0.02), SERVING_OK, False, ["champion"]),
        # Straddles zero: within noise, not a reason to reject.
        (0.60, 0.50, champion(-0.03, 0.02), SERVING_OK, True, []),
        # Worse, but by less than max_regression at the upper end.
        (0.60, 0.50, champion(-0.05, -0.005), SERVING_OK, True, []),
        # Upper end exactly at -max_regression is not "entirely below" it.
        (0.60, 0.50, champion(-0.05, -0.01), SERVING_OK, True, []),
        (0.60, 0.50, NO_CHAMPION, Check("serving", False, "did not load"), False, ["serving"]),
    ],
)
def test_each_rule(candidate, baseline, champ, serving, promote, failed) -> None:
    decision = decide(PARAMS, candidate, baseline, champ, serving)
    assert decision.promote is promote
    assert [check.name for check in decision.checks if not check.passed] == failed
    assert len(decision.reasons) == len(failed)
    assert [check.name for check in decision.checks] == [
        "min_score",
        "baseline",
        "input_contract",
        "champion",
        "serving",
    ]


INCOMPATIBLE = ChampionComparison(
    "3", "incompatible: the champion takes 14 features (f0..f13), this model takes 15 features (f0..f14)"
)


@pytest.mark.parametrize(
    ("champ", "allow", "promote"),
    [
        (NO_CHAMPION, False, True),
        (INCOMPATIBLE, False, False),
        (INCOMPATIBLE, True, True),
    ],
)
def test_a_changed_input_contract_is_promoted_only_when_allowed(champ, allow, promote) -> None:
    params = GateParams("roc_auc", 0.5, 0.01, allow_schema_change=allow)
    decision = decide(params, 0.60, 0.50, champ, SERVING_OK)
    assert decision.promote is promote
    contract = next(check for check in decision.checks if check.name == "input_contract")
    assert contract.passed is promote
    if champ is INCOMPATIBLE:
        assert contract.values["change"].startswith("the champion takes 14 features")
    if not promote:
        # A verdict on the model: the same model on the same data is rejected again.
        assert decision.is_final
        assert "allow_schema_change=true" in contract.detail


def test_lower_is_better_gate_metric() -> None:
    params = GateParams(gate_metric="log_loss", min_score=0.69, max_regression=0.01)
    assert decide(params, 0.60, 0.693, NO_CHAMPION, SERVING_OK).promote
    decision = decide(params, 0.70, 0.693, NO_CHAMPION, SERVING_OK)
    assert [c.name for c in decision.checks if not c.passed] == ["min_score", "baseline"]


def test_unknown_gate_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown gate_metric 'auc'"):
        decide(GateParams("auc", 0.5, 0.01), 0.6, 0.5, NO_CHAMPION, SERVING_OK)


def test_fast_roc_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    scores = rng.integers(0, 10, 500) / 10  # many ties
    assert _fast_roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert _fast_roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)


def scores_with_signal(y: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    return 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(size=len(y)))))


def test_identical_models_give_a_zero_width_interval_at_zero() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = scores_with_signal(y, 1.0, rng)
    result = paired_bootstrap_ci(y, p, p, "roc_auc")
    assert (result.diff, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.n_resamples >= 1000


def test_a_clearly_worse_candidate_has_an_interval_below_zero() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 600)
    champion_p = scores_with_signal(y, 2.0, rng)
    candidate_p = rng.random(600)  # no skill
    result = paired_bootstrap_ci(y, candidate_p, champion_p, "roc_auc")
    point = roc_auc_score(y, candidate_p) - roc_auc_score(y, champion_p)
    assert result.diff == pytest.approx(point)
    assert result.low < point < result.high < -0.2


@pytest.mark.slow
def test_the_interval_covers_the_truth_about_95_percent_of_the_time() -> None:
    # Two equally good models (same signal strength, independent noise): true diff is 0.
    rng = np.random.default_rng(2)
    covered = 0
    trials = 60
    for trial in range(trials):
        y = rng.integers(0, 2, 300)
        a, b = scores_with_signal(y, 0.6, rng), scores_with_signal(y, 0.6, rng)
        result = paired_bootstrap_ci(y, a, b, "roc_auc", n_resamples=1000, seed=trial)
        covered += result.low <= 0 <= result.high
    assert covered / trials >= 0.85


def test_seeded_and_deterministic() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    a, b = scores_with_signal(y, 0.5, rng), scores_with_signal(y, 0.6, rng)
    assert paired_bootstrap_ci(y, a, b, "roc_auc", seed=7) == paired_bootstrap_ci(y, a, b, "roc_auc", seed=7)
    assert paired_bootstrap_ci(y, a, b, "roc_auc", seed=7) != paired_bootstrap_ci(y, a, b, "roc_auc", seed=8)


@pytest.mark.slow
def test_capped_resample_size_keeps_the_full_sample_width() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 40_000)
    a, b = scores_with_signal(y, 0.5, rng), scores_with_signal(y, 0.55, rng)
    full = paired_bootstrap_ci(y, a, b, "roc_auc", n_resamples=400, max_rows=40_000)
    capped = paired_bootstrap_ci(y, a, b, "roc_auc", n_resamples=400, max_rows=4_000)
    assert capped.resample_rows == 4_000 and full.resample_rows == 40_000
    assert capped.diff == full.diff
    # The rescaled m-out-of-n interval is about as wide as the full bootstrap's.
    assert (capped.high - capped.low) == pytest.approx(full.high - full.low, rel=0.25)


@pytest.mark.slow
def test_log_loss_diff_is_oriented() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 400)
    good, bad = scores_with_signal(y, 1.5, rng), np.full(400, 0.5)
    result = paired_bootstrap_ci(y, good, bad, "log_loss")
    assert result.diff == pytest.approx(log_loss(y, bad) - log_loss(y, good))
    assert result.low > 0


@pytest.mark.slow
def test_label_metric_on_labels() -> None:
    y = np.array([0, 0, 1, 1] * 50)
    candidate = np.array([0, 1, 1, 1] * 50)  # accuracy 0.75
    champion_labels = np.ones(200)  # accuracy 0.5
    result = paired_bootstrap_ci(y, candidate, champion_labels, "accuracy")
    assert result.diff == pytest.approx(0.25)
    assert 0.1 < result.low < 0.25 < result.high < 0.4
    assert not uses_probabilities("accuracy") and uses_probabilities("roc_auc")


def test_within_noise_candidates_get_the_same_verdict_where_a_point_comparison_flips() -> None:
    # A champion and two retrains of the same quality: one lands a hair above the champion on
    # this test set, one a hair below. A point comparison would promote one and reject the
    # other on the strength of noise; the gate gives both the same verdict.
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 800)
    champion_p = scores_with_signal(y, 0.7, rng)
    verdicts, point_says = [], []
    candidates = []
    while len(candidates) < 2:
        candidate_p = scores_with_signal(y, 0.7, rng)
        diff = roc_auc_score(y, candidate_p) - roc_auc_score(y, champion_p)
        wanted_sign = 1 if not candidates else -1
        if 0 < wanted_sign * diff < 0.02:
            candidates.append(candidate_p)
    for candidate_p in candidates:
        result = paired_bootstrap_ci(y, candidate_p, champion_p, "roc_auc")
        comparison = ChampionComparison("1", "scored", roc_auc_score(y, champion_p), result)
        decision = decide(PARAMS, roc_auc_score(y, candidate_p), 0.5, comparison, SERVING_OK)
        verdicts.append(decision.promote)
        point_says.append(roc_auc_score(y, candidate_p) > roc_auc_score(y, champion_p))
    assert point_says == [True, False], "the setup must be one a point comparison flips on"
    # Neither is significantly worse: both pass, so the verdict does not hang on the noise.
    assert verdicts == [True, True]


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        (GateParams("auc", 0.5, 0.01), "unknown gate_metric 'auc'"),
        (GateParams("roc_auc", float("nan"), 0.01), "min_score must be a finite number"),
        (GateParams("roc_auc", 0.5, float("nan")), "max_regression must be a finite number >= 0"),
        (GateParams("roc_auc", 0.5, -0.5), "max_regression must be a finite number >= 0, got -0.5"),
    ],
)
def test_meaningless_gate_parameters_are_refused(params, problem) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        check_gate_params(params)


@pytest.mark.parametrize("n_values", [1, 2, 7, 300])
def test_resampled_roc_auc_by_counting_equals_sklearn(n_values) -> None:
    # Scores with few distinct values (and ties across classes) are coded once and counted on
    # each resample; the result must be sklearn's ROC AUC of that resample.
    rng = np.random.default_rng(n_values)
    scores = rng.integers(0, n_values, 5000) / max(n_values, 1)
    y = (rng.random(5000) < 0.3 + 0.4 * scores).astype(np.int64)
    scorer = _resample_scorer("roc_auc", _fast_roc_auc, scores, size=1000)
    for _ in range(20):
        rows = rng.integers(0, 5000, 1000)
        assert scorer(y[rows], rows) == pytest.approx(roc_auc_score(y[rows], scores[rows]), abs=1e-12)


def test_resampled_roc_auc_of_many_distinct_scores_is_the_metric_itself() -> None:
    rng = np.random.default_rng(5)
    scores = rng.random(5000)
    y = rng.integers(0, 2, 5000)
    rows = rng.integers(0, 5000, 1000)
    scorer = _resample_scorer("roc_auc", _fast_roc_auc, scores, size=1000)
    assert scorer(y[rows], rows) == _fast_roc_auc(y[rows], scores[rows])
