"""Entry point main: run train_model, evaluate_model and register_model under one parent run."""

import logging

import click

from pystock_training import config
from pystock_training.cli import StepCommand, configure_logging, run_cli, training_options
from pystock_training.pipeline import PipelineParams, run_pipeline

logger = logging.getLogger("pystock_training")


@click.command("main", cls=StepCommand)
@training_options
@click.option("--model-name", default=config.MODEL_NAME, show_default=True, help="Registered model name.")
def main(**params: object) -> None:
    """Train, evaluate and register the pyStock classifier."""
    configure_logging()
    result = run_cli("main", run_pipeline, params=PipelineParams(**params))
    # The one-line summary is the last thing the driver logs.
    logger.info("%s", result.summary)


if __name__ == "__main__":
    main()
