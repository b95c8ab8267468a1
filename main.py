"""Entry point main: run train_model, evaluate_model and register_model under one parent run."""

import click

from pystock_training import config
from pystock_training.cli import StepCommand, configure_logging, gate_options, run_cli, training_options
from pystock_training.pipeline import PipelineParams, run_pipeline


@click.command("main", cls=StepCommand)
@training_options
@click.option("--model-name", default=config.MODEL_NAME, show_default=True, help="Registered model name.")
@gate_options
@click.option(
    "--fail-on-reject",
    type=bool,
    default=config.FAIL_ON_REJECT,
    show_default=True,
    help="Exit non-zero when the gate rejects the model (for CI gates).",
)
@click.option(
    "--force",
    type=bool,
    default=config.FORCE,
    show_default=True,
    help="Train even when a finished run already has this run key.",
)
@click.option(
    "--reap-after-hours",
    type=float,
    default=config.REAP_AFTER_HOURS,
    show_default=True,
    help="Mark the pipeline's runs still RUNNING after this long FAILED (orphans of a kill -9).",
)
def main(**params: object) -> None:
    """Train, evaluate and register the pyStock classifier; promote it if it passes the gate."""
    configure_logging()
    result = run_cli("main", run_pipeline, params=PipelineParams(**params))
    raise SystemExit(result.exit_code)


if __name__ == "__main__":
    main()
