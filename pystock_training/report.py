"""What people read: the evaluation report, and the registry's and the parent run's descriptions."""

from __future__ import annotations

from typing import Any

from pystock_training.config import LOWER_IS_BETTER
from pystock_training.gate import BootstrapCI

PLOTS = ("confusion_matrix", "roc_curve", "precision_recall_curve", "calibration")


def evaluation_report(
    results: dict[str, dict[str, float]],
    n_rows: int,
    comparison: BootstrapCI | None = None,
    *,
    lift: BootstrapCI | None = None,
    champion_skipped: str = "",
    artifacts: str = "",
    approximation: str = "",
) -> str:
    """Markdown: the model against the naive baseline and the champion, per metric, the CIs and the plots.

    ``comparison`` is the CI of candidate - champion, ``lift`` that of model - baseline;
    ``champion_skipped`` says why a champion in the predictions was not compared. ``artifacts``
    is the UI route of the run's artifacts (``#/experiments/<id>/runs/<id>/artifacts``): MLflow's
    report viewer shows no images and resolves no relative paths, so the plots are links there.
    ``approximation`` says why some metrics are approximate (too many distinct probabilities).
    """
    has_champion = "champion" in results
    lines = [
        "# Evaluation report",
        "",
        f"Test rows: {n_rows}. Baseline: always the training prior (probability) and the majority "
        "class (label). Lift is model minus baseline, flipped for log loss so positive is better."
        + (
            " Champion: the current `@champion` scored on the test rows it never trained on."
            if has_champion
            else ""
        ),
        "",
        *([f"Approximate: {approximation}.", ""] if approximation else []),
        "| metric | model | baseline | lift |" + (" champion |" if has_champion else ""),
        "|---|---:|---:|---:|" + ("---:|" if has_champion else ""),
    ]
    for name, value in results["model"].items():
        direction = " (lower is better)" if name in LOWER_IS_BETTER else ""
        baseline, lifted = results["baseline"][name], results["lift"][name]
        row = f"| {name}{direction} | {value:.4f} | {baseline:.4f} | {lifted:+.4f} |"
        if has_champion:
            row += f" {results['champion'][name]:.4f} |"
        lines.append(row)
    lines.append("")
    if lift is not None:
        significant = lift.low > 0
        lines += [
            f"Lift over the baseline on {lift.metric} (positive is better): {lift.diff:+.4f}, "
            f"{_interval(lift)}: **{'significant' if significant else 'not significant'}** "
            f"(the interval {'lies entirely above' if significant else 'does not lie entirely above'} 0).",
            "",
        ]
    if comparison is not None:
        test_rows = comparison.test_rows if comparison.test_rows is not None else n_rows
        lines.append(
            f"Candidate minus champion on {comparison.metric} (positive is better), compared on "
            f"{comparison.n_rows} of {test_rows} test rows the champion never trained on: "
            f"{comparison.diff:+.4f}, {_interval(comparison)}."
        )
        if comparison.n_rows < test_rows:
            lines.append(
                "The champion column above is scored on those rows only, the model column on all "
                "test rows; the difference scores both on the same rows."
            )
    elif champion_skipped:
        lines.append(f"The champion was not compared: {champion_skipped}.")
    else:
        lines.append("No champion was compared (none yet, or its inputs did not fit).")
    lines += ["", "## Plots", ""]
    prefix = f"{artifacts}/" if artifacts else ""
    lines += [f"- [{name}]({prefix}plots/{name}.png)" for name in PLOTS]
    return "\n".join(lines) + "\n"


def _interval(ci: BootstrapCI) -> str:
    """The interval and how it was made, in words."""
    blocks = (
        f"blocks of {ci.block_length} consecutive rows" if ci.block_length > 1 else "single rows (i.i.d.)"
    )
    rescaled = f", rescaled to {ci.n_rows} rows" if ci.resample_rows < ci.n_rows else ""
    return (
        f"{ci.confidence:.0%} CI [{ci.low:+.4f}, {ci.high:+.4f}] from a paired bootstrap of "
        f"{ci.n_resamples} resamples of {ci.resample_rows} rows in {blocks}{rescaled} (seed {ci.seed})"
    )


def model_description(features: list[str]) -> str:
    """Markdown for the registered model: what it predicts, its input contract, its aliases."""
    names = f"`{features[0]}`..`{features[-1]}`" if len(features) > 1 else f"`{features[0]}`"
    return "\n".join(
        [
            'Predicts whether a stock closes up tomorrow: the probability of "up" from the last '
            f"{len(features)} days' up/down flags (pyStock).",
            "",
            f"**Input**: {len(features)} features {names}, oldest day first (1 = the day closed up), "
            "any numeric or bool dtype, NaN or null for missing. Accepted as a DataFrame with those "
            f"names, any DataFrame of exactly {len(features)} columns (by position, as "
            "`pd.read_csv(f, header=None)` gives), a 2-D array or a list of rows; over "
            "`mlflow models serve` as `dataframe_split` (with or without `columns`), "
            "`dataframe_records`, `inputs` or `instances`. Anything else is refused with one line "
            "(HTTP 400) saying what was expected.",
            "",
            "**Output**: one probability per row.",
            "",
            "**Aliases**: `champion` is the version downstream deploys; it moves only when a version "
            "passes the promotion gate (better than a floor and the naive baseline, not significantly "
            "worse than the champion on rows it never trained on, same input contract, serves every "
            "input shape). `challenger` is the newest trained version, promoted or not. Each "
            "version's description says what was decided and why.",
        ]
    )


def run_description(record: dict[str, Any], links: dict[str, str]) -> str:
    """Markdown for the pipeline's parent run: the verdict and links, the summary, the numbers.

    ``record`` is the register step's ``decision.json``; ``links`` maps a label (the version,
    the decision record, the report) to a URL. The run page folds the note to its first lines,
    so the verdict and the links come first.
    """
    metric = record["gate"]["gate_metric"]
    checks = {check["name"]: check for check in record["checks"]}
    lift = checks.get("baseline", {}).get("values", {})
    champion = checks.get("champion", {}).get("values", {})
    lines = [
        f"**{record['verdict'].capitalize()}** · "
        + " · ".join(f"[{label}]({url})" for label, url in links.items()),
        "",
        record["summary"],
        "",
        f"- model: {metric} {record['candidate'][metric]:.4f}",
        f"- naive baseline: {record['candidate'][f'baseline_{metric}']:.4f}; model minus baseline "
        f"{_signed(lift.get('lift'))}, 95% CI {_ci(lift, 'lift_ci')}",
    ]
    if champion.get("diff") is not None:
        lines.append(
            f"- champion version {champion['champion_version']}: {champion['champion_value']:.4f} on "
            f"{champion['rows_compared']} rows it never trained on; model minus champion "
            f"{champion['diff']:+.4f}, 95% CI {_ci(champion, 'ci')}"
        )
    else:
        lines.append(f"- champion: not compared ({record.get('champion_status', 'none')})")
    lines += [
        "",
        "Checks: " + ", ".join(f"{name} {_mark(check['passed'])}" for name, check in checks.items()),
    ]
    return "\n".join(lines) + "\n"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _ci(values: dict[str, Any], prefix: str) -> str:
    low, high = values.get(f"{prefix}_low"), values.get(f"{prefix}_high")
    return "n/a" if low is None or high is None else f"[{low:+.4f}, {high:+.4f}]"


def _mark(passed: bool) -> str:
    return "passed" if passed else "**failed**"
