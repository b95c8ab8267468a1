"""The human-readable evaluation report logged on the evaluate run."""

from __future__ import annotations

from pystock_training.config import LOWER_IS_BETTER
from pystock_training.gate import BootstrapCI

PLOTS = ("confusion_matrix", "roc_curve", "precision_recall_curve", "calibration")


def evaluation_report(
    results: dict[str, dict[str, float]], n_rows: int, comparison: BootstrapCI | None = None
) -> str:
    """Markdown: the model against the naive baseline and the champion, per metric, and the plots."""
    has_champion = "champion" in results
    lines = [
        "# Evaluation report",
        "",
        f"Test rows: {n_rows}. Baseline: always the training prior (probability) and the majority "
        "class (label). Lift is model minus baseline, flipped for log loss so positive is better."
        + (" Champion: the current `@champion` scored on the same rows." if has_champion else ""),
        "",
        "| metric | model | baseline | lift |" + (" champion |" if has_champion else ""),
        "|---|---:|---:|---:|" + ("---:|" if has_champion else ""),
    ]
    for name, value in results["model"].items():
        direction = " (lower is better)" if name in LOWER_IS_BETTER else ""
        baseline, lift = results["baseline"][name], results["lift"][name]
        row = f"| {name}{direction} | {value:.4f} | {baseline:.4f} | {lift:+.4f} |"
        if has_champion:
            row += f" {results['champion'][name]:.4f} |"
        lines.append(row)
    lines.append("")
    if comparison is not None:
        lines.append(
            f"Candidate minus champion on {comparison.metric} (positive is better): "
            f"{comparison.diff:+.4f}, {comparison.confidence:.0%} CI [{comparison.low:+.4f}, "
            f"{comparison.high:+.4f}] from a paired bootstrap of {comparison.n_resamples} resamples "
            f"of {comparison.resample_rows} rows (seed {comparison.seed})."
        )
    else:
        lines.append("No champion was compared (none yet, or its inputs did not fit).")
    lines += ["", "## Plots", ""]
    lines += [f"![{name}](plots/{name}.png)" for name in PLOTS]
    return "\n".join(lines) + "\n"
