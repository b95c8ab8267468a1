"""Find the current ``@champion`` and score it on the candidate's test rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pystock_training import config

logger = logging.getLogger(__name__)

# What the registry answers for "no such model" and "no such alias" (SQLite and REST stores).
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


@dataclass(frozen=True)
class ChampionScore:
    """The champion's probabilities on the test rows, or why there are none."""

    version: str | None
    status: str  # "scored", "none" or "incompatible: <reason>"
    proba: np.ndarray | None = None


def current_champion(model_name: str) -> str | None:
    """The version the ``champion`` alias points at, or None."""
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, config.ALIAS_CHAMPION).version)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND_CODES:
            return None
        raise


def score_champion(model_name: str, features: pd.DataFrame) -> ChampionScore:
    """Score the champion on exactly these rows, if one exists and its input schema fits.

    Any failure to load or predict makes the champion "incompatible" rather than failing the
    run: a broken old champion must not block a good new model.
    """
    version = current_champion(model_name)
    if version is None:
        logger.info("no %s@%s yet: nothing to compare with", model_name, config.ALIAS_CHAMPION)
        return ChampionScore(None, "none")
    uri = f"models:/{model_name}/{version}"
    try:
        signature = mlflow.models.get_model_info(uri).signature
        expected = list(features.columns)
        if signature is None or signature.inputs.input_names() != expected:
            found = signature.inputs.input_names() if signature else "no signature"
            return _incompatible(version, f"its inputs are {found}, the data has {expected}")
        proba = np.asarray(mlflow.pyfunc.load_model(uri).predict(features), dtype=np.float64).ravel()
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot compare", not "cannot train"
        return _incompatible(version, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    if len(proba) != len(features) or not np.all(np.isfinite(proba)) or proba.min() < 0 or proba.max() > 1:
        return _incompatible(version, "it did not predict one probability in [0, 1] per row")
    logger.info("scored champion version %s on %d test rows", version, len(proba))
    return ChampionScore(version, "scored", proba)


def _incompatible(version: str, reason: str) -> ChampionScore:
    logger.warning("champion version %s not compared: %s", version, reason)
    return ChampionScore(version, f"incompatible: {reason}")
