"""Entry point train_model: fit the classifier and write the test predictions CSV."""

import click

from pystock_training import config
from pystock_training.cli import StepCommand, configure_logging, run_cli, training_options
from pystock_training.steps.train_model import train_model


@click.command("train_model", cls=StepCommand)
@training_options
@click.option("--model-name", default=config.MODEL_NAME, show_default=True, help="Whose champion to score.")
@click.option(
    "--predictions-file",
    default="",
    help="Where to write the test predictions CSV. Empty: a temp path unique to this run.",
)
@click.option(
    "--data-digest",
    default="",
    help="The sha256 the data file must hash to as it is read (the driver's run key). Empty: any.",
)
def main(**params: object) -> None:
    """Train the XGBoost up/down classifier and log it as `model`."""
    configure_logging()
    run_cli("train_model", train_model, **params)


if __name__ == "__main__":
    main()
