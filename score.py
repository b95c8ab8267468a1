"""Entry point score: predict a table with a registered model into a CSV of probabilities."""

import click

import pystock_training.startup  # noqa: F401 - first: it turns collection off for the imports
from pystock_training.cli import StepCommand, configure_logging, parameter_options, run_cli
from pystock_training.steps.score import score


@click.command("score", cls=StepCommand)
@parameter_options("score")
def main(**params: object) -> None:
    """Score every row of the input file into the output CSV and log the run."""
    configure_logging()
    run_cli("score", score, **params)


if __name__ == "__main__":
    main()
