"""The human-readable evaluation report logged on the evaluate run."""

from __future__ import annotations

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
) -> str:
    """Markdown: the model against the naive baseline and the champion, per metric, the CIs and the plots.

    ``comparison`` is the CI of candidate - champion, ``lift`` that of model - baseline;
    ``champion_skipped`` says why a champion in the predictions was not compared.
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
    lines += [f"![{name}](plots/{name}.png)" for name in PLOTS]
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
