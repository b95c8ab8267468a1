"""Entry point register_model: register the train run's model and promote it if it earns it."""

import click

import pystock_training.startup  # noqa: F401 - first: it turns collection off for the imports
from pystock_training.cli import StepCommand, configure_logging, parameter_options, run_cli
from pystock_training.steps.register_model import register_model


@click.command("register_model", cls=StepCommand)
@parameter_options("register_model")
def main(**params: object) -> None:
    """Register the model as `challenger`; move `champion` to it only if it passes the gate."""
    configure_logging()
    run_cli("register_model", register_model, **params)


if __name__ == "__main__":
    main()
