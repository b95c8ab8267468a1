"""Entry point register_model: register the train run's model and prove the version loads."""

import click

from pystock_training import config
from pystock_training.cli import StepCommand, configure_logging, run_cli
from pystock_training.steps import register_model


@click.command("register_model", cls=StepCommand)
@click.option("--train-run-id", required=True, help="The train_model run whose model to register.")
@click.option("--model-name", default=config.MODEL_NAME, show_default=True)
@click.option("--model-uri", default="", help="Empty: the model the train run logged.")
@click.option("--evaluate-run-id", default="", help="The evaluate_model run whose metrics tag the version.")
def main(**params: str) -> None:
    """Register, check that the version loads and predicts, and set its aliases."""
    configure_logging()
    run_cli("register_model", register_model, **params)


if __name__ == "__main__":
    main()
