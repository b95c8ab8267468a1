"""Entry point main: run train_model, evaluate_model and register_model under one parent run."""

import click

import pystock_training.startup  # noqa: F401 - first: it turns collection off for the imports
from pystock_training.cli import StepCommand, configure_logging, parameter_options, run_cli
from pystock_training.params import PipelineParams
from pystock_training.pipeline import run_pipeline


@click.command("main", cls=StepCommand)
@parameter_options("main")
def main(**params: object) -> None:
    """Train, evaluate and register the pyStock classifier; promote it if it passes the gate."""
    configure_logging()
    result = run_cli("main", run_pipeline, params=PipelineParams(**params))
    raise SystemExit(result.exit_code)


if __name__ == "__main__":
    main()
