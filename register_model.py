"""Entry point register_model: register the train run's model and promote it if it earns it."""

import click

from pystock_training import config
from pystock_training.cli import StepCommand, configure_logging, gate_options, run_cli
from pystock_training.steps.register_model import register_model


@click.command("register_model", cls=StepCommand)
@click.option("--train-run-id", required=True, help="The train_model run whose model to register.")
@click.option("--model-name", default=config.MODEL_NAME, show_default=True)
@click.option("--model-uri", default="", help="Empty: the model the train run logged.")
@click.option("--evaluate-run-id", required=True, help="The evaluate_model run whose metrics the gate reads.")
@gate_options
def main(**params: object) -> None:
    """Register the model as `challenger`; move `champion` to it only if it passes the gate."""
    configure_logging()
    run_cli("register_model", register_model, **params)


if __name__ == "__main__":
    main()
