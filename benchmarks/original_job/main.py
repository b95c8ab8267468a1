"""The original driver: train_model, then evaluate_model, under one parent run."""

import tempfile
from pathlib import Path

import click
import mlflow


@click.command()
@click.option("--data-file")
def main(data_file: str) -> None:
    predictions_file = str(Path(tempfile.mkdtemp()) / "predictions.csv")
    with mlflow.start_run():
        # env_manager is passed on: the only change needed to run the original on MLflow 3
        # with --env-manager local (without it each step builds a conda env).
        train = mlflow.run(
            ".",
            "train_model",
            parameters={"data_file": data_file, "predictions_file": predictions_file},
            env_manager="local",
        )
        mlflow.run(
            ".",
            "evaluate_model",
            parameters={"predictions_file": predictions_file, "train_run_id": train.run_id},
            env_manager="local",
        )


if __name__ == "__main__":
    main()
