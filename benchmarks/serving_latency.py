"""What the champion's input contract costs: this project's pyfunc loader against the stock one.

Both models hold the same booster, logged in one invocation: the stock ``mlflow.xgboost`` flavour
with a named signature (what MLflow gives by default, which refuses positional and numpy input)
and ``pystock_training.model.log_model`` (the contract of serving.py, no input schema). For each
it reports the load time and the median ``predict`` latency on named frames of 1, 100 and
100,000 rows, and for ours also on the positional shapes the stock model refuses. Run from the
project root: ``.venv/bin/python benchmarks/serving_latency.py``.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import infer_signature

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pystock_training.model import log_model

logger = logging.getLogger("serving_latency")
FEATURES = [f"f{i}" for i in range(14)]
SIZES = (1, 100, 100_000)


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.integers(0, 2, (200_000, 14)).astype(np.int8), columns=FEATURES)
    label = (frame["f13"].to_numpy() ^ (rng.random(len(frame)) < 0.3)).astype(np.int8)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "learning_rate": 0.05},
        xgb.QuantileDMatrix(frame, label=label),
        num_boost_round=150,
    )
    example = frame.head(5).astype(np.float64)
    with tempfile.TemporaryDirectory() as scratch:
        mlflow.set_tracking_uri(f"sqlite:///{scratch}/mlflow.db")
        # A new store puts its artifacts under ./mlruns of its creator: keep them in scratch.
        os.chdir(scratch)
        with mlflow.start_run():
            stock = mlflow.xgboost.log_model(
                booster,
                name="stock",
                signature=infer_signature(example),
                input_example=example,
                pip_requirements=[],
            ).model_uri
            ours = log_model(booster, "ours", example).model_uri
        rows = {n: frame.sample(n, replace=n > len(frame), random_state=1).astype(np.float64) for n in SIZES}
        logger.info(f"{'model':<8} {'load s':>7} " + " ".join(f"{f'named {n}':>13}" for n in SIZES))
        loaded = {}
        for name, uri in (("stock", stock), ("ours", ours)):
            load = median_seconds(lambda uri=uri: mlflow.pyfunc.load_model(uri), 5)
            model = loaded[name] = mlflow.pyfunc.load_model(uri)
            cells = [
                median_seconds(lambda data=rows[n], model=model: model.predict(data), 50 if n < 10_000 else 5)
                for n in SIZES
            ]
            logger.info(f"{name:<8} {load:>7.3f} " + " ".join(f"{cell * 1e3:>10.2f} ms" for cell in cells))
        model = loaded["ours"]
        for shape, convert in (
            ("positional", lambda data: pd.DataFrame(data.to_numpy().astype(np.int64))),
            ("numpy", lambda data: data.to_numpy()),
            ("list", lambda data: data.to_numpy().tolist()),
        ):
            cells = []
            for n in SIZES:
                data = convert(rows[n])
                cells.append(median_seconds(lambda data=data: model.predict(data), 50 if n < 10_000 else 5))
            logger.info(f"{'ours':<8} {shape:>7} " + " ".join(f"{cell * 1e3:>10.2f} ms" for cell in cells))
        native = mlflow.xgboost.load_model(ours)
        logger.info(
            f"native flavour of ours: {type(native).__module__}.{type(native).__name__}, "
            f"feature names {native.feature_names[0]}..{native.feature_names[-1]}"
        )


if __name__ == "__main__":
    main()
