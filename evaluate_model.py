"""Entry point evaluate_model: score the test predictions against the baseline and the champion."""

import click

from pystock_training import config
from pystock_training.cli import StepCommand, configure_logging, run_cli
from pystock_training.steps.evaluate_model import evaluate_model


@click.command("evaluate_model", cls=StepCommand)
@click.option("--predictions-file", required=True, help="The predictions CSV that train_model wrote.")
@click.option(
    "--gate-metric",
    default=config.GATE_METRIC,
    show_default=True,
    help="Metric whose paired bootstrap CI against the champion is computed.",
)
@click.option(
    "--model-uri", default="", help="The logged model the predictions are of; its page lists the metrics."
)
def main(**params: str) -> None:
    """Log metrics, baseline and champion metrics, the CI, plots and a report on this run."""
    configure_logging()
    run_cli("evaluate_model", evaluate_model, **params)


if __name__ == "__main__":
    main()
