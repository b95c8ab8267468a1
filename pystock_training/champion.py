"""Find the current ``@champion`` and score it on the candidate's test rows it never trained on."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo

from pystock_training import config
from pystock_training.digest import FileDigest
from pystock_training.distinct import distinct_rows
from pystock_training.errors import PystockError, first_line

logger = logging.getLogger(__name__)

# What the registry answers for "no such model" and "no such alias" (SQLite and REST stores).
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def model_features(info: ModelInfo) -> list[str] | None:
    """A logged model's feature names: its MLmodel metadata, else its signature's input names."""
    listed = (info.metadata or {}).get(config.FEATURES_KEY)
    if listed:
        return [str(name) for name in listed]
    inputs = info.signature.inputs if info.signature is not None else None
    if inputs is not None and inputs.has_input_names():
        return [str(name) for name in inputs.input_names()]
    return None


def contract_change(champion: list[str] | None, candidate: list[str]) -> str:
    """How the candidate's input contract differs from the champion's, in words."""
    if champion is None:
        return f"the champion records no input contract, this model takes {_described(candidate)}"
    return f"the champion takes {_described(champion)}, this model takes {_described(candidate)}"


def _described(features: list[str]) -> str:
    names = f"{features[0]}..{features[-1]}" if len(features) > 1 else ", ".join(features)
    return f"{len(features)} features ({names})"


@dataclass(frozen=True)
class ChampionScore:
    """The champion's probabilities on the test rows (NaN where not compared), or why there are none."""

    version: str | None
    status: str  # "scored", "none", "incompatible: <reason>" or "not compared: <reason>"
    proba: np.ndarray | None = None
    rows_compared: int = 0


def current_champion(model_name: str) -> str | None:
    """The version the ``champion`` alias points at, or None."""
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, config.ALIAS_CHAMPION).version)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND_CODES:
            return None
        raise


@dataclass(frozen=True)
class TrainedOn:
    """What a model version was trained on: its data file's identity and how it was split."""

    data_digest: str
    data_size: int | None
    data_rows: int | None
    split: str
    test_size: float
    random_state: int


@dataclass(frozen=True)
class Champion:
    """The version ``@champion`` pointed at when it was looked up, and what it was trained on."""

    model_name: str
    version: str
    trained_on: TrainedOn | None

    @property
    def uri(self) -> str:
        """The version's registry URI (by number: the alias may move meanwhile)."""
        return f"models:/{self.model_name}/{self.version}"


def find_champion(model_name: str) -> Champion | None:
    """The current ``@champion`` and its training record, or None when there is no champion.

    Raises:
        PystockError: The registry answered with something other than "no such model or alias".
    """
    try:
        version = current_champion(model_name)
        if version is None:
            return None
        return Champion(model_name, version, _trained_on(model_name, version))
    except MlflowException as exc:
        raise PystockError(f"champion of {model_name} could not be read: {first_line(exc)}") from exc


def clean_rows(
    champion: TrainedOn | None, data: FileDigest, n_rows: int, test: np.ndarray
) -> tuple[np.ndarray, str]:
    """Which of the candidate's test rows the champion provably never trained on, and why.

    ``test`` holds the candidate's test row positions in its file of ``n_rows`` rows. A row is
    clean when it lies beyond the champion's file in a verified append (this file starts with
    the exact bytes of the champion's, by digest), or inside the champion's own test part of
    those shared rows. Another file may repeat any of the champion's rows, so nothing in it is
    clean.

    Returns:
        A boolean mask over ``test`` and a reason for the rows that are not clean ("" if none).
    """
    none = np.zeros(len(test), dtype=bool)
    shared_rows, why_not = _shared_rows(champion, data, n_rows)
    if champion is None or shared_rows is None:
        return none, why_not
    # Imported here: register_model reads the champion but never splits data, and the split
    # brings sklearn into its process.
    from pystock_training.data import holdout_rows

    champion_test = np.zeros(shared_rows, dtype=bool)
    champion_test[
        holdout_rows(
            shared_rows,
            split=champion.split,
            test_size=champion.test_size,
            random_state=champion.random_state,
        )
    ] = True
    mask = test >= shared_rows
    shared = np.flatnonzero(~mask)
    mask[shared] = champion_test[test[shared]]
    if mask.all():
        return mask, ""
    return mask, (
        f"{int((~mask).sum())} of the {len(test)} test rows were in its training part "
        f"(split={champion.split}, test_size={champion.test_size:g}, random_state={champion.random_state})"
    )


def _shared_rows(champion: TrainedOn | None, data: FileDigest, n_rows: int) -> tuple[int | None, str]:
    """How many leading rows of this table are provably the champion's table, or None and why not."""
    if champion is None:
        return None, "its training data is not recorded, so any of these rows may have been its training rows"
    if champion.data_digest == data.sha256:
        return n_rows, ""
    if (
        champion.data_size is not None
        and champion.data_rows is not None
        and champion.data_rows <= n_rows
        and data.is_append_of(champion.data_digest, champion.data_size)
    ):
        return champion.data_rows, ""
    return None, (
        f"its data file (sha256 {champion.data_digest[:12]}) is not this file nor a verified prefix of "
        "it, so any of these rows may have been its training rows"
    )


def clean_start(champion: TrainedOn | None, data: FileDigest, n_rows: int) -> tuple[int | None, str]:
    """The first row position from which on every row is one the champion never trained on.

    The same rule as ``clean_rows`` for a champion trained with the time split, whose rows
    never trained on are one run at the end of its table (its test part) and everything after
    it. None, with the reason, when no row is provably clean (another table, a random split).
    """
    shared_rows, why_not = _shared_rows(champion, data, n_rows)
    if champion is None or shared_rows is None:
        return None, why_not
    if champion.split != "time":
        return None, f"it was trained with split={champion.split}, whose test rows are scattered"
    return shared_rows - math.ceil(champion.test_size * shared_rows), ""


def score_champion(
    champion: Champion | None,
    features: pd.DataFrame,
    labels: np.ndarray,
    clean: np.ndarray,
    why_not_clean: str = "",
) -> ChampionScore:
    """Score the champion on the clean test rows, if one exists, its inputs fit and enough are clean.

    ``features`` and ``labels`` are the candidate's test rows in file order; ``clean`` marks the
    rows the champion never trained on (``clean_rows``). The probabilities come back NaN on the
    other rows. The comparison is skipped, with the reason, when the champion's inputs differ or
    too few clean rows remain to tell two models apart. It is not skipped when the champion
    fails to load or predict: that is an error (the run fails and the next one retries),
    because skipping would let any candidate replace a champion that is merely unreachable.

    Raises:
        PystockError: The champion exists and fits but could not be loaded or scored.
    """
    if champion is None:
        logger.info("no @%s yet: nothing to compare with", config.ALIAS_CHAMPION)
        return ChampionScore(None, "none")
    uri = champion.uri
    try:
        found = model_features(mlflow.models.get_model_info(uri))
    except MlflowException as exc:
        raise PystockError(f"champion {uri} could not be read: {first_line(exc)}") from exc
    expected = list(features.columns)
    if found != expected:
        return _not_compared(champion.version, f"{config.INCOMPATIBLE}: {contract_change(found, expected)}")
    n_clean = int(clean.sum())
    classes = np.unique(labels[clean])
    if n_clean < config.MIN_ROWS_COMPARED or len(classes) < 2:
        reason = why_not_clean or "the rows it never trained on hold a single class"
        return _not_compared(
            champion.version,
            f"not compared: only {n_clean} of {len(clean)} test rows are rows it never trained on "
            f"(at least {config.MIN_ROWS_COMPARED} with both labels needed): {reason}",
        )
    # Each distinct clean row is predicted once.
    rows = distinct_rows(features[clean] if not clean.all() else features)
    try:
        scored = np.asarray(mlflow.pyfunc.load_model(uri).predict(rows.rows), dtype=np.float64).ravel()
    except Exception as exc:
        # One line: a schema-enforcement error, say, runs to many.
        raise PystockError(
            f"champion {uri} could not be scored: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    if (
        len(scored) != len(rows.rows)
        or not np.all(np.isfinite(scored))
        or scored.min() < 0
        or scored.max() > 1
    ):
        raise PystockError(f"champion {uri} did not predict one probability in [0, 1] per row")
    proba = np.full(len(clean), np.nan)
    proba[clean] = rows.expand(scored)
    if why_not_clean:
        logger.info(
            "champion version %s compared on %d clean rows: %s", champion.version, n_clean, why_not_clean
        )
    logger.info("scored champion version %s on %d of %d test rows", champion.version, n_clean, len(clean))
    return ChampionScore(champion.version, "scored", proba, n_clean)


def _trained_on(model_name: str, version: str) -> TrainedOn | None:
    """The version's data record (tags) and its train run's split parameters."""
    client = MlflowClient()
    model_version = client.get_model_version(model_name, version)
    tags = model_version.tags
    digest = tags.get(config.TAG_DATA_DIGEST)
    if not digest or not model_version.run_id:
        return None
    params = client.get_run(model_version.run_id).data.params
    try:
        return TrainedOn(
            digest,
            _int_or_none(tags.get(config.TAG_DATA_SIZE)),
            _int_or_none(tags.get(config.TAG_DATA_ROWS)),
            params["split"],
            float(params["test_size"]),
            int(float(params["random_state"])),
        )
    except (KeyError, ValueError):
        return None


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _not_compared(version: str, status: str) -> ChampionScore:
    logger.warning("champion version %s %s", version, status)
    return ChampionScore(version, status)
