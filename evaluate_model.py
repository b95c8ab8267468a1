"""Entry point evaluate_model: score the test predictions against the naive baseline."""

import click

from pystock_training.cli import StepCommand, configure_logging, run_cli
from pystock_training.steps import evaluate_model


@click.command("evaluate_model", cls=StepCommand)
@click.option("--predictions-file", required=True, help="The predictions CSV that train_model wrote.")
def main(predictions_file: str) -> None:
    """Log metrics, baseline metrics, lift, plots and a report on this run."""
    configure_logging()
    run_cli("evaluate_model", evaluate_model, predictions_file=predictions_file)


if __name__ == "__main__":
    main()
