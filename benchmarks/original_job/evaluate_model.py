"""The original evaluation step: metrics from the predictions CSV, then the model registered inline."""

import click
import mlflow
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score


@click.command()
@click.option("--predictions-file")
@click.option("--train-run-id")
def main(predictions_file: str, train_run_id: str) -> None:
    frame = pd.read_csv(predictions_file)
    with mlflow.start_run():
        # As the original computed them: (y_pred, y_true) order and log loss on hard labels.
        mlflow.log_metrics(
            {
                "accuracy": accuracy_score(frame.y_pred, frame.y_test),
                "f1": f1_score(frame.y_pred, frame.y_test),
                "roc_auc": roc_auc_score(frame.y_test, frame.y_pred),
                "log_loss": log_loss(frame.y_pred, frame.y_test),
            }
        )
        mlflow.register_model(f"runs:/{train_run_id}/model", "training-model-psystock")


if __name__ == "__main__":
    main()
