"""Entry point evaluate_model: score the test predictions against the baseline and the champion."""

import click

import pystock_training.startup  # noqa: F401 - first: it turns collection off for the imports
from pystock_training.cli import StepCommand, configure_logging, parameter_options, run_cli
from pystock_training.steps.evaluate_model import evaluate_model


@click.command("evaluate_model", cls=StepCommand)
@parameter_options("evaluate_model")
def main(**params: str) -> None:
    """Log metrics, baseline and champion metrics, the CI, plots and a report on this run."""
    configure_logging()
    run_cli("evaluate_model", evaluate_model, **params)


if __name__ == "__main__":
    main()
