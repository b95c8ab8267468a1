"""The human-readable evaluation report logged on the evaluate run."""

from __future__ import annotations

from pystock_training.metrics import LOWER_IS_BETTER

PLOTS = ("confusion_matrix", "roc_curve", "precision_recall_curve", "calibration")


def evaluation_report(results: dict[str, dict[str, float]], n_rows: int) -> str:
    """Markdown: model against naive baseline per metric, and links to the plots."""
    lines = [
        "# Evaluation report",
        "",
        f"Test rows: {n_rows}. Baseline: always the training prior (probability) and the majority "
        "class (label). Lift is model minus baseline, flipped for log loss so positive is better.",
        "",
        "| metric | model | baseline | lift |",
        "|---|---:|---:|---:|",
    ]
    for name, value in results["model"].items():
        direction = " (lower is better)" if name in LOWER_IS_BETTER else ""
        baseline, lift = results["baseline"][name], results["lift"][name]
        lines.append(f"| {name}{direction} | {value:.4f} | {baseline:.4f} | {lift:+.4f} |")
    lines += ["", "## Plots", ""]
    lines += [f"![{name}](plots/{name}.png)" for name in PLOTS]
    return "\n".join(lines) + "\n"
