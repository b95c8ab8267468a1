"""Entry point score: predict a table with a registered model into a CSV of probabilities."""

import click

from pystock_training import config
from pystock_training.cli import StepCommand, configure_logging, run_cli
from pystock_training.steps.score import DEFAULT_MODEL_URI, score


@click.command("score", cls=StepCommand)
@click.option(
    "--input-file",
    required=True,
    help="Table to score: CSV or Parquet with the model's features, optionally then the 0/1 label.",
)
@click.option(
    "--output-file",
    required=True,
    help="Where to write the scored CSV (y_proba, y_pred, y_true if labelled).",
)
@click.option(
    "--model-uri",
    default=DEFAULT_MODEL_URI,
    show_default=True,
    help="Model to score with; an @alias is pinned to its version number first.",
)
@click.option(
    "--threshold",
    type=float,
    default=config.THRESHOLD,
    show_default=True,
    help="Probability at or above which y_pred is 1.",
)
def main(**params: object) -> None:
    """Score every row of the input file into the output CSV and log the run."""
    configure_logging()
    run_cli("score", score, **params)


if __name__ == "__main__":
    main()
