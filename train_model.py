"""Entry point train_model: fit the classifier and write the test predictions CSV."""

import click

import pystock_training.startup  # noqa: F401 - first: it turns collection off for the imports
from pystock_training.cli import StepCommand, configure_logging, parameter_options, run_cli
from pystock_training.steps.train_model import train_model


@click.command("train_model", cls=StepCommand)
@parameter_options("train_model")
def main(**params: object) -> None:
    """Train the XGBoost up/down classifier and log it as `model`."""
    configure_logging()
    run_cli("train_model", train_model, **params)


if __name__ == "__main__":
    main()
