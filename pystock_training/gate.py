"""The promotion gate: does the candidate earn ``champion``?

The daily up/down signal is weak and test sets can be small, so a bare point comparison with the
champion would move the alias at random. The gate instead asks five questions, all of which must
be yes:

1. ``min_score``: is the candidate's gate metric better than an absolute floor?
2. ``baseline``: does it beat the naive baseline (training prior / majority class)?
3. ``input_contract``: does it take the champion's features, or did the user allow a new shape
   (``allow_schema_change``)? Clients send the champion's columns.
4. ``champion``: is it *not significantly worse* than the current champion on the same test rows?
   The paired block bootstrap 95% CI of (candidate - champion), oriented so positive means better, must
   not lie entirely below ``-max_regression``. A difference inside the noise never decides.
5. ``serving``: does the registered version load through pyfunc and give the same sane
   probabilities for its input example sent named, positionally, as an array and as a list?
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from pystock_training.config import INCOMPATIBLE, LOWER_IS_BETTER
from pystock_training.params import GateParams, check_gate_metric

logger = logging.getLogger(__name__)

N_RESAMPLES = 1000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
# Above this many test rows each resample draws only this many (m-out-of-n bootstrap) and the
# interval is rescaled by sqrt(m / n): the cost stays flat at 10M rows.
MAX_RESAMPLE_ROWS = 20_000
# Rows are sliding windows: neighbours share 14 of their 15 days and row i's label is row i+1's
# last feature, so rows closer than one window are not independent. A block at least one window
# long (14 feature days + the label day) keeps each row with the neighbours it overlaps.
MIN_BLOCK_LENGTH = 15


def better(metric: str, value: float, than: float) -> bool:
    """Whether ``value`` is strictly better than ``than`` for this metric."""
    return value < than if metric in LOWER_IS_BETTER else value > than


def oriented_diff(metric: str, candidate: float, champion: float) -> float:
    """candidate - champion, sign-flipped for lower-is-better metrics: positive means better."""
    return champion - candidate if metric in LOWER_IS_BETTER else candidate - champion


def uses_probabilities(metric: str) -> bool:
    """Whether the metric scores probabilities (else 0/1 labels)."""
    check_gate_metric(metric)
    return _metric_fn(metric)[1]


def _fast_roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    # The Mann-Whitney form of ROC AUC (ties get their average rank, so a constant score is
    # 0.5), equal to sklearn's roc_auc_score (tests/test_gate.py checks) at a fraction of its
    # per-call overhead, which dominates thousands of bootstrap calls; ranked here with numpy
    # alone, which is twice as fast as scipy's rankdata.
    n = len(y_score)
    order = np.argsort(y_score)
    ordered = y_score[order]
    new_value = np.empty(n, dtype=bool)
    new_value[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new_value[1:])
    first = np.flatnonzero(new_value)
    average_rank = (first + np.append(first[1:], n) + 1) / 2
    positives = y_true[order] == 1
    n_pos = int(positives.sum())
    n_neg = n - n_pos
    rank_sum = average_rank[np.cumsum(new_value)[positives] - 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _resample_scorer(
    metric: str, fn: Callable[[np.ndarray, np.ndarray], float], scores: np.ndarray, size: int
) -> Callable[[np.ndarray, np.ndarray], float]:
    """``fn(y, scores[rows])`` for the bootstrap's resamples, ROC AUC by counting where it can.

    Probabilities from a model of 0/1 features take at most a few thousand values. Coded once by
    value, each resample's ROC AUC comes from counts of positives and negatives per value (the
    Mann-Whitney form, ties counting one half), in time linear in the resample instead of a sort
    of it: the same value to float rounding, several times faster over a thousand resamples.
    """
    if metric != "roc_auc":
        return lambda y, rows: fn(y, scores[rows])
    if scores.min() == scores.max():
        # A constant (the naive baseline) ties every pair on every resample.
        return lambda y, rows: 0.5
    values, codes = np.unique(scores, return_inverse=True)
    if len(values) > size:
        return lambda y, rows: fn(y, scores[rows])
    return _counted_roc_auc(codes, len(values))


def _counted_roc_auc(codes: np.ndarray, n_values: int) -> Callable[[np.ndarray, np.ndarray], float]:
    """ROC AUC of resampled rows from the codes of their scores (see ``_resample_scorer``)."""

    def counted_roc_auc(y: np.ndarray, rows: np.ndarray) -> float:
        resampled = codes[rows]
        totals = np.bincount(resampled, minlength=n_values)
        positives = np.bincount(resampled, weights=y, minlength=n_values)
        negatives = totals - positives
        negatives_below = np.cumsum(negatives) - negatives
        pairs = positives.sum() * negatives.sum()
        return float((positives * (negatives_below + negatives / 2)).sum() / pairs)

    return counted_roc_auc


def coded_scorer(
    metric: str, codes: np.ndarray, values: np.ndarray, size: int
) -> Callable[[np.ndarray, np.ndarray], float]:
    """The resample scorer of rows gathered from a column, stored as ``codes`` into ``values``.

    ``values`` are the sorted distinct values of the whole column the rows were gathered from:
    the method follows the column as ``_resample_scorer`` chooses it, and the codes are the ones
    it would give, so a gathered resample scores exactly as it would with the column in memory.
    Codes of two bytes instead of float64 scores keep a million gathered rows in a few MB.
    """
    fn, _ = _metric_fn(metric)
    if metric == "roc_auc" and len(values) == 1:
        return lambda y, rows: 0.5
    if metric == "roc_auc" and len(values) <= size:
        return _counted_roc_auc(codes, len(values))
    return lambda y, rows: fn(y, values[codes[rows]])


def scores_scorer(metric: str, scores: np.ndarray) -> Callable[[np.ndarray, np.ndarray], float]:
    """The resample scorer of gathered rows from a column of more distinct values than any resample holds."""
    fn, _ = _metric_fn(metric)
    return lambda y, rows: fn(y, scores[rows])


def _metric_fn(metric: str) -> tuple[Callable[[np.ndarray, np.ndarray], float], bool]:
    """The metric's function and whether it takes probabilities (else hard labels)."""
    # Imported here: register_model decides with this module but never computes a metric, and
    # sklearn would add a third of a second and 60 MB to its start.
    from pystock_training.metrics import LABEL_METRICS, PROBA_METRICS

    if metric == "roc_auc":
        return _fast_roc_auc, True
    if metric in PROBA_METRICS:
        return PROBA_METRICS[metric], True
    return LABEL_METRICS[metric], False


@dataclass(frozen=True)
class BootstrapCI:
    """Paired block bootstrap interval of the oriented difference candidate - champion.

    ``n_rows`` is the rows compared (resampled), ``test_rows`` the test rows they were taken from.
    Every field round-trips through ``asdict`` and evaluation.json.
    """

    metric: str
    diff: float
    low: float
    high: float
    n_resamples: int
    resample_rows: int
    n_rows: int
    confidence: float = CONFIDENCE
    seed: int = BOOTSTRAP_SEED
    # A record without block_length resampled single rows.
    block_length: int = 1
    test_rows: int | None = None


def block_length_for(n_rows: int) -> int:
    """Block length for ``n_rows`` rows: ``max(MIN_BLOCK_LENGTH, ceil(n_rows ** (1/3)))``.

    n^(1/3) is the growth rate of the block length that minimises the error of a block bootstrap
    variance estimate (Hall, Horowitz and Jing, 1995); the floor of one window keeps overlapping
    rows together on test sets of a few thousand rows. It never exceeds half the rows: a single
    block would make every resample a rotation of the same rows and the interval a point.
    """
    return max(1, min(max(MIN_BLOCK_LENGTH, _ceil_cube_root(n_rows)), n_rows // 2))


def _ceil_cube_root(n: int) -> int:
    # Exact on integers: 1000 ** (1 / 3) is 9.999999999999998 in floating point.
    root = round(n ** (1 / 3))
    while root**3 < n:
        root += 1
    while root > 0 and (root - 1) ** 3 >= n:
        root -= 1
    return root


def circular_block_indices(starts: np.ndarray, block_length: int, n_rows: int, size: int) -> np.ndarray:
    """Row indices of one resample: ``block_length`` consecutive rows from each start, cut to ``size``.

    A block that runs past the last row continues at the first. Wrapping (the circular block
    bootstrap) gives every row the same chance to be drawn; plain moving blocks would under-draw
    the rows near both ends.
    """
    offsets = np.arange(block_length)
    return (np.asarray(starts)[:, None] + offsets).ravel()[:size] % n_rows


class BlockBootstrap:
    """The resampling of ``paired_bootstrap_ci`` in rounds, so the rows can come from a stream.

    ``draw`` gives the block starts of the resamples still needed (the same random draws in the
    same order as one resample at a time), the caller gathers the rows they cover, and
    ``score`` scores them; a resample of a single class is drawn again in the next round, as it
    would be at once. A resample touches at most ``size`` rows, so a round touches at most
    ``n_resamples * size`` whatever the rows compared.

    Raises:
        ValueError: A block length below 1.
    """

    def __init__(
        self,
        n_rows: int,
        metric: str,
        *,
        n_resamples: int = N_RESAMPLES,
        seed: int = BOOTSTRAP_SEED,
        max_rows: int = MAX_RESAMPLE_ROWS,
        confidence: float = CONFIDENCE,
        block_length: int | None = None,
    ) -> None:
        check_gate_metric(metric)
        self.n_rows, self.metric, self.n_resamples = n_rows, metric, n_resamples
        self.seed, self.confidence = seed, confidence
        self.length = block_length_for(n_rows) if block_length is None else block_length
        if self.length < 1:
            raise ValueError(f"block_length must be at least 1, got {self.length}")
        self.size = min(n_rows, max_rows)
        self.n_blocks = -(-self.size // self.length)
        self._rng = np.random.default_rng(seed)
        self._diffs: list[float] = []
        self._attempts = 0
        self._drawn = 0

    @property
    def done(self) -> bool:
        """Whether every resample has been scored."""
        return len(self._diffs) >= self.n_resamples

    def draw(self) -> np.ndarray:
        """The block starts of the next round, one row of ``n_blocks`` starts per resample.

        Raises:
            ValueError: Ten times ``n_resamples`` resamples were drawn and too many held a single class.
        """
        allowed = 10 * self.n_resamples - self._attempts
        if allowed <= 0:
            raise ValueError("too few rows of one class to resample; the CI is undefined")
        count = min(self.n_resamples - len(self._diffs), allowed)
        # One call per resample: a single call for all of them would draw other numbers.
        starts = np.stack([self._rng.integers(0, self.n_rows, self.n_blocks) for _ in range(count)])
        self._attempts += count
        self._drawn = count
        return starts

    def score(
        self,
        y_true: np.ndarray,
        rows_of: Callable[[int], np.ndarray],
        score_candidate: Callable[[np.ndarray, np.ndarray], float],
        score_champion: Callable[[np.ndarray, np.ndarray], float],
    ) -> None:
        """Score the resamples of the last ``draw``; ``rows_of(i)`` indexes resample i in ``y_true``."""
        for resample in range(self._drawn):
            rows = rows_of(resample)
            y = y_true[rows]
            if y.min() == y.max():  # a resample with one class has no AUC; draw again
                continue
            self._diffs.append(oriented_diff(self.metric, score_candidate(y, rows), score_champion(y, rows)))
        self._drawn = 0

    def result(self, point: float) -> BootstrapCI:
        """The interval around ``point``, the oriented difference on all rows."""
        alpha = (1 - self.confidence) / 2
        low, high = np.quantile(np.array(self._diffs), [alpha, 1 - alpha])
        if self.size < self.n_rows:
            # m-out-of-n: the spread of a size-m resample is sqrt(n/m) times too wide.
            scale = math.sqrt(self.size / self.n_rows)
            low, high = point + (low - point) * scale, point + (high - point) * scale
        return BootstrapCI(
            metric=self.metric,
            diff=float(point),
            low=float(low),
            high=float(high),
            n_resamples=self.n_resamples,
            resample_rows=self.size,
            n_rows=self.n_rows,
            confidence=self.confidence,
            seed=self.seed,
            block_length=self.length,
            test_rows=self.n_rows,
        )


def paired_bootstrap_ci(
    y_true: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    metric: str,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    max_rows: int = MAX_RESAMPLE_ROWS,
    confidence: float = CONFIDENCE,
    block_length: int | None = None,
    point: float | None = None,
) -> BootstrapCI:
    """Percentile CI of the metric difference from a paired circular block bootstrap.

    ``candidate`` and ``champion`` are probabilities for probability metrics (ROC AUC, average
    precision, log loss) and 0/1 labels for the others, on the same rows in file (time) order.
    Pairing matters: both models are scored on each resample, so the noise they share (which rows
    happen to be easy) cancels, and the interval is much tighter than two separate intervals.
    Blocks matter: overlapping windows make neighbouring rows alike, and resampling single rows
    would treat them as independent evidence and give too narrow an interval. Each resample
    joins blocks of ``block_length`` consecutive rows (default ``block_length_for(n)``; 1 is the
    i.i.d. bootstrap) starting anywhere on the circle of rows. ``point``, the oriented difference
    on all rows, is computed here unless the caller already has it (on millions of rows that
    costs more than the resamples). The rows are in memory here; ``BlockBootstrap`` resamples
    rows that stream past.

    Raises:
        ValueError: Unknown metric, mismatched lengths, a single class in ``y_true``, or a block
            length below 1.
    """
    check_gate_metric(metric)
    y_true = np.asarray(y_true)
    candidate = np.asarray(candidate, dtype=np.float64)
    champion = np.asarray(champion, dtype=np.float64)
    n_rows = len(y_true)
    if not n_rows == len(candidate) == len(champion):
        raise ValueError("y_true and both probability arrays must have the same length")
    # min and max, not np.unique: no sort of millions of labels.
    if n_rows == 0 or y_true.min() == y_true.max():
        raise ValueError("the test labels hold a single class")
    bootstrap = BlockBootstrap(
        n_rows,
        metric,
        n_resamples=n_resamples,
        seed=seed,
        max_rows=max_rows,
        confidence=confidence,
        block_length=block_length,
    )
    fn, _ = _metric_fn(metric)
    if point is None:
        point = oriented_diff(metric, fn(y_true, candidate), fn(y_true, champion))
    score_candidate = _resample_scorer(metric, fn, candidate, bootstrap.size)
    score_champion = _resample_scorer(metric, fn, champion, bootstrap.size)
    length, size = bootstrap.length, bootstrap.size
    while not bootstrap.done:
        starts = bootstrap.draw()
        # With blocks of 1 this is the same draw, and the same interval, as the i.i.d. bootstrap.
        bootstrap.score(
            y_true,
            lambda resample, starts=starts: circular_block_indices(starts[resample], length, n_rows, size),
            score_candidate,
            score_champion,
        )
    return bootstrap.result(point)


@dataclass(frozen=True)
class Check:
    """One gate rule: whether it passed, why, and the numbers it looked at.

    ``final``: a failure is a verdict on the model itself, which the same model on the same data
    would get again. A failure that is not (the champion moved meanwhile, the registry did not
    answer) leaves the run key open, so the next run retries.
    """

    name: str
    passed: bool
    detail: str
    values: dict[str, float | str | None] = field(default_factory=dict)
    final: bool = True


@dataclass(frozen=True)
class ChampionComparison:
    """The champion as compared on the candidate's test rows, or why it was not."""

    version: str | None
    status: str  # "scored", "none", "incompatible: <reason>" or "not compared: <reason>"
    value: float | None = None
    ci: BootstrapCI | None = None


@dataclass(frozen=True)
class GateDecision:
    """The verdict and every check behind it."""

    promote: bool
    checks: list[Check]

    @property
    def reasons(self) -> list[str]:
        """The details of the failed checks."""
        return [check.detail for check in self.checks if not check.passed]

    @property
    def is_final(self) -> bool:
        """Whether this is a verdict on the model: promoted, or failed a check on its merits."""
        return self.promote or any(not check.passed and check.final for check in self.checks)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form for decision.json."""
        return {"promote": self.promote, "checks": [asdict(check) for check in self.checks]}


def decide(
    params: GateParams,
    candidate: float,
    baseline: float,
    champion: ChampionComparison,
    serving: Check,
    lift: BootstrapCI | None = None,
) -> GateDecision:
    """Apply the five rules to the candidate's gate metric value.

    ``lift``, the bootstrap CI of the candidate minus the baseline, is reported with the baseline
    check; the rule itself compares the point values.
    """
    metric = params.gate_metric
    check_gate_metric(metric)
    comparison = "below" if metric in LOWER_IS_BETTER else "above"
    checks = [
        Check(
            "min_score",
            better(metric, candidate, params.min_score),
            f"{metric} {candidate:.4f} {'is' if better(metric, candidate, params.min_score) else 'is not'} "
            f"{comparison} min_score {params.min_score:g}",
            {"value": candidate, "min_score": params.min_score},
        ),
        Check(
            "baseline",
            better(metric, candidate, baseline),
            f"{metric} {candidate:.4f} {'beats' if better(metric, candidate, baseline) else 'does not beat'} "
            f"the naive baseline's {baseline:.4f}",
            {"value": candidate, "baseline": baseline} | _lift_values(lift),
        ),
        _contract_check(params, champion),
        _champion_check(params, champion),
        serving,
    ]
    return GateDecision(all(check.passed for check in checks), checks)


def lift_significant(lift: BootstrapCI) -> bool:
    """Whether the lift over the baseline is told apart from none: its whole CI is above 0."""
    return lift.low > 0


def _lift_values(lift: BootstrapCI | None) -> dict[str, float | str | None]:
    if lift is None:
        return {}
    return {
        "lift": lift.diff,
        "lift_ci_low": lift.low,
        "lift_ci_high": lift.high,
        "lift_significant": "yes" if lift_significant(lift) else "no",
    }


def _contract_check(params: GateParams, champion: ChampionComparison) -> Check:
    """The candidate takes the champion's features, or the user said the shape may change.

    Downstream clients send the champion's columns; a new shape promoted silently breaks them.
    """
    prefix = f"{INCOMPATIBLE}: "
    changed = champion.status.startswith(prefix)
    change = champion.status.removeprefix(prefix)
    if not changed:
        detail = "same features as the champion" if champion.version else "no champion to match"
        return Check("input_contract", True, detail, {"champion_version": champion.version})
    if params.allow_schema_change:
        return Check(
            "input_contract",
            True,
            f"input contract changes, allowed by allow_schema_change: {change}",
            {"champion_version": champion.version, "change": change},
        )
    return Check(
        "input_contract",
        False,
        f"input contract changes: {change}; clients of champion version {champion.version} would break "
        "(pass -P allow_schema_change=true when downstream expects the new shape)",
        {"champion_version": champion.version, "change": change},
    )


def _champion_check(params: GateParams, champion: ChampionComparison) -> Check:
    if champion.ci is None:
        return Check(
            "champion",
            True,
            f"no comparison with a champion ({champion.status})",
            {"champion_version": champion.version, "status": champion.status, "rows_compared": 0},
        )
    ci = champion.ci
    passed = ci.high >= -params.max_regression
    verdict = "not significantly worse than" if passed else "significantly worse than"
    return Check(
        "champion",
        passed,
        f"{verdict} champion version {champion.version}: {ci.metric} diff {ci.diff:+.4f}, "
        f"{ci.confidence:.0%} CI [{ci.low:+.4f}, {ci.high:+.4f}], max_regression {params.max_regression:g}",
        {
            "champion_version": champion.version,
            "champion_value": champion.value,
            "diff": ci.diff,
            "ci_low": ci.low,
            "ci_high": ci.high,
            "max_regression": params.max_regression,
            "n_resamples": ci.n_resamples,
            "resample_rows": ci.resample_rows,
            "rows_compared": ci.n_rows,
        },
    )
