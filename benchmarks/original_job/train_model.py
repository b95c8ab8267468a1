"""The original training step: autologged XGBoost on a 67/33 split, predictions to CSV."""

import click
import mlflow
import mlflow.xgboost
import pandas as pd
import xgboost as xgb
from sklearn.model_selection import train_test_split


@click.command()
@click.option("--data-file")
@click.option("--predictions-file")
def main(data_file: str, predictions_file: str) -> None:
    mlflow.xgboost.autolog()
    frame = pd.read_csv(data_file, header=None)
    x, y = frame.iloc[:, :-1], frame.iloc[:, -1]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.33, random_state=42)
    with mlflow.start_run():
        dtrain = xgb.DMatrix(x_train, label=y_train)
        dtest = xgb.DMatrix(x_test, label=y_test)
        booster = xgb.train({}, dtrain, evals=[(dtest, "test")])
        proba = booster.predict(dtest)
        pd.DataFrame({"y_test": y_test, "y_pred": (proba > 0.5).astype(int), "y_proba": proba}).to_csv(
            predictions_file, index=False
        )


if __name__ == "__main__":
    main()
