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
from pystock_training.errors import PystockError, first_line

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


def score_champion(model_name: str, features: pd.DataFrame, holdout: Holdout) -> ChampionScore:
    """Score the champion on exactly these rows, if one exists, its inputs fit and it never saw them.

    The comparison is skipped ("incompatible", with the reason) when the champion's inputs differ
    or it may have trained on some of these rows (a same-file split that is not the candidate's
    holdout or inside it). It is not skipped when the champion fails to load or predict: that is
    an error (the run fails and the next one retries), because skipping would let any candidate
    replace a champion that is merely unreachable for a moment.

    Raises:
        PystockError: The champion exists and fits but could not be loaded or scored.
    """
    version = current_champion(model_name)
    if version is None:
        logger.info("no %s@%s yet: nothing to compare with", model_name, config.ALIAS_CHAMPION)
        return ChampionScore(None, "none")
    uri = f"models:/{model_name}/{version}"
    try:
        signature = mlflow.models.get_model_info(uri).signature
        champion_holdout = _holdout_of(model_name, version)
    except MlflowException as exc:
        raise PystockError(f"champion {uri} could not be read: {first_line(exc)}") from exc
    expected = list(features.columns)
    if signature is None or signature.inputs.input_names() != expected:
        found = signature.inputs.input_names() if signature else "no signature"
        return _incompatible(version, f"its inputs are {found}, the data has {expected}")
    overlap = holdout.overlap_with(champion_holdout)
    if overlap:
        return _incompatible(version, overlap)
    try:
        proba = np.asarray(mlflow.pyfunc.load_model(uri).predict(features), dtype=np.float64).ravel()
    except Exception as exc:
        # One line: a schema-enforcement error, say, runs to many.
        raise PystockError(
            f"champion {uri} could not be scored: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    if len(proba) != len(features) or not np.all(np.isfinite(proba)) or proba.min() < 0 or proba.max() > 1:
        raise PystockError(f"champion {uri} did not predict one probability in [0, 1] per row")
    logger.info("scored champion version %s on %d rows", version, len(proba))
    return ChampionScore(version, "scored", proba)


@dataclass(frozen=True)
class Holdout:
    """Which rows of which file a model was tested on, to tell whether it trained on others' test rows."""

    data_digest: str
    split: str
    test_size: float
    random_state: int

    def overlap_with(self, champion: Holdout | None) -> str | None:
        """Why the champion may have trained on some of this holdout's rows, or None if it cannot have.

        Another file is taken to hold other rows (new data is appended days); on the same file,
        only a time split whose test part contains this one, or the identical random split,
        keeps the champion's training rows out of this test set.
        """
        if champion is None:
            return "its training data is not recorded, so it may have trained on these rows"
        if champion.data_digest != self.data_digest:
            return None
        if self.split == champion.split == "time" and self.test_size <= champion.test_size:
            return None
        if self.split == champion.split == "random" and (self.test_size, self.random_state) == (
            champion.test_size,
            champion.random_state,
        ):
            return None
        return (
            f"it was trained on the same file with split={champion.split}, test_size={champion.test_size:g}, "
            f"random_state={champion.random_state}, so some of these test rows were its training rows"
        )


def _holdout_of(model_name: str, version: str) -> Holdout | None:
    """The champion's holdout, from its version's data digest and its train run's parameters."""
    client = MlflowClient()
    model_version = client.get_model_version(model_name, version)
    digest = model_version.tags.get(config.TAG_DATA_DIGEST)
    if not digest or not model_version.run_id:
        return None
    params = client.get_run(model_version.run_id).data.params
    try:
        return Holdout(
            digest, params["split"], float(params["test_size"]), int(float(params["random_state"]))
        )
    except (KeyError, ValueError):
        return None


def _incompatible(version: str, reason: str) -> ChampionScore:
    logger.warning("champion version %s not compared: %s", version, reason)
    return ChampionScore(version, f"incompatible: {reason}")
