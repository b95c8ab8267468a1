"""Width of the 95% CIs on the shipped data: i.i.d. bootstrap against the block bootstrap.

    .venv/bin/python benchmarks/ci_width.py [--data-file data/training/data.csv]

Fits two models with the pipeline's fit on the time split's training part (the default parameters,
and max_depth=2 with another seed), scores both on the test rows in file order and logs, for the
ROC AUC difference between them and for each model's lift over the naive baseline, the width of
the paired bootstrap's 95% interval with single rows (block_length=1) and with the block rule,
over a few bootstrap seeds.
"""

from __future__ import annotations

import logging
import statistics
import sys
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pystock_training import config
from pystock_training.data import load_dataset, split_rows
from pystock_training.gate import paired_bootstrap_ci
from pystock_training.model import fit, predict_proba
from pystock_training.params import TrainParams

logger = logging.getLogger("ci_width")

SEEDS = range(5)


def widths(y: np.ndarray, a: np.ndarray, b: np.ndarray, block_length: int | None) -> tuple[float, float, int]:
    """Mean and spread (max - min) of the interval width over the seeds, and the block length."""
    results = [paired_bootstrap_ci(y, a, b, "roc_auc", seed=s, block_length=block_length) for s in SEEDS]
    spans = [r.high - r.low for r in results]
    return statistics.mean(spans), max(spans) - min(spans), results[0].block_length


@click.command()
@click.option(
    "--data-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=config.DATA_FILE
)
def main(data_file: Path) -> None:
    """Log the CI widths."""
    dataset = load_dataset(data_file)
    parts = split_rows(dataset.labels, split="time", source=dataset.path)
    features, labels = dataset.features, dataset.labels
    probabilities = {}
    for name, params in (
        ("default", TrainParams()),
        ("max_depth=2", TrainParams(max_depth=2, random_state=1)),
    ):
        booster = fit(
            features.iloc[parts.train],
            labels[parts.train],
            features.iloc[parts.validation],
            labels[parts.validation],
            params,
        )
        probabilities[name] = predict_proba(booster, features.iloc[parts.test])
    y = labels[parts.test]
    prior = float(labels[parts.train].mean())
    comparisons = {
        "diff default - max_depth=2": (probabilities["default"], probabilities["max_depth=2"]),
        "lift default - baseline": (probabilities["default"], np.full(len(y), prior)),
        "lift max_depth=2 - baseline": (probabilities["max_depth=2"], np.full(len(y), prior)),
    }
    logger.info("%s: %d test rows (time split), roc_auc, %d bootstrap seeds", data_file, len(y), len(SEEDS))
    for label, (a, b) in comparisons.items():
        point = paired_bootstrap_ci(y, a, b, "roc_auc", n_resamples=1).diff
        iid, iid_spread, _ = widths(y, a, b, 1)
        block, block_spread, length = widths(y, a, b, None)
        logger.info(
            "%-28s point %+.4f | i.i.d. width %.4f (±%.4f) | blocks of %d width %.4f (±%.4f) | ratio %.2f",
            label,
            point,
            iid,
            iid_spread / 2,
            length,
            block,
            block_spread / 2,
            block / iid,
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
