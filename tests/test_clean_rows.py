"""The champion is compared only on rows it provably never trained on; the digest is of what was read."""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.model_selection import train_test_split

from pystock_training import config
from pystock_training.champion import TrainedOn, clean_rows
from pystock_training.data import load_dataset
from pystock_training.digest import HashingReader, file_digest
from pystock_training.errors import DataError
from pystock_training.steps.evaluate_model import evaluate_model
from pystock_training.steps.register_model import register_model
from pystock_training.steps.train_model import train_model
from tests.conftest import signal_frame


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, header=False, index=False)
    return path


def sha256(path: Path, size: int | None = None) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data if size is None else data[:size]).hexdigest()


# --- digests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("read_size", [1, 7, 4096, 1 << 20])
def test_the_hashing_reader_hashes_every_byte_once_and_keeps_the_prefixes(read_size: int) -> None:
    data = b"".join(f"{i},{i % 2}\n".encode() for i in range(5000))
    cuts = (1, 10, 4096, len(data) - 3, len(data))
    reader = HashingReader(io.BytesIO(data), cuts)
    seen = b""
    while chunk := reader.read(read_size):
        seen += chunk
        if len(seen) > len(data) // 2:
            break  # the consumer stops early: finish reads the rest
    digest = reader.finish()
    assert digest.sha256 == hashlib.sha256(data).hexdigest() and digest.size == len(data)
    for cut in cuts:
        assert digest.prefixes[cut].sha256 == hashlib.sha256(data[:cut]).hexdigest(), cut
        assert digest.prefixes[cut].ends_line == data[:cut].endswith(b"\n"), cut


@pytest.mark.parametrize("kind", ["int8 csv", "float csv", "parquet"])
def test_load_dataset_digests_the_bytes_it_parsed(kind: str, tmp_path: Path) -> None:
    frame = signal_frame(200)
    if kind == "parquet":
        path = tmp_path / "data.parquet"
        frame.rename(columns=str).to_parquet(path)
    else:
        if kind == "float csv":
            frame = frame.astype(float)
            frame.iloc[3, 2] = 0.5  # a fraction: the float path
        path = write_csv(tmp_path / "data.csv", frame)
    dataset = load_dataset(path, prefix_sizes=(100,))
    assert dataset.digest.sha256 == sha256(path)
    assert dataset.digest.size == path.stat().st_size
    assert dataset.digest.prefixes[100].sha256 == sha256(path, 100)
    assert dataset.digest == file_digest(path, (100,))


def test_an_append_is_verified_by_the_prefix_digest(tmp_path: Path) -> None:
    old = write_csv(tmp_path / "old.csv", signal_frame(300, seed=0))
    new = write_csv(tmp_path / "new.csv", pd.concat([signal_frame(300, seed=0), signal_frame(50, seed=1)]))
    size = old.stat().st_size
    assert file_digest(new, (size,)).is_append_of(sha256(old), size)
    # One flipped byte in the shared part, or an old file that ended mid-line: not an append.
    edited = bytearray(new.read_bytes())
    edited[10] = ord("1") if edited[10] == ord("0") else ord("0")
    (tmp_path / "edited.csv").write_bytes(bytes(edited))
    assert not file_digest(tmp_path / "edited.csv", (size,)).is_append_of(sha256(old), size)
    cut = old.read_bytes()[:-1]  # no final newline: the next bytes extend its last row
    (tmp_path / "cut.csv").write_bytes(cut)
    assert not file_digest(new, (len(cut),)).is_append_of(hashlib.sha256(cut).hexdigest(), len(cut))


# --- which rows are clean ----------------------------------------------------------------------


def trained_on(path: Path, n_rows: int, split: str, test_size: float = 0.33, seed: int = 42) -> TrainedOn:
    return TrainedOn(sha256(path), path.stat().st_size, n_rows, split, test_size, seed)


def test_same_file_time_split_inside_the_champions_test_part_is_all_clean(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "f.csv", signal_frame(300))
    test = np.arange(300 - math.ceil(0.2 * 300), 300)
    mask, why = clean_rows(trained_on(path, 300, "time", 0.33), file_digest(path), 300, test)
    assert mask.all() and why == ""
    # A larger candidate test part reaches into the champion's training rows.
    test = np.arange(300 - math.ceil(0.5 * 300), 300)
    mask, why = clean_rows(trained_on(path, 300, "time", 0.33), file_digest(path), 300, test)
    np.testing.assert_array_equal(mask, test >= 300 - math.ceil(0.33 * 300))
    assert "were in its training part" in why


@pytest.mark.parametrize("candidate_split", ["time", "random"])
def test_a_random_split_champion_on_an_appended_file_is_compared_on_clean_rows_only(
    candidate_split: str, tmp_path: Path
) -> None:
    old = write_csv(tmp_path / "old.csv", signal_frame(300, seed=0))
    new = write_csv(tmp_path / "new.csv", pd.concat([signal_frame(300, seed=0), signal_frame(150, seed=1)]))
    champion = trained_on(old, 300, "random")
    if candidate_split == "time":
        test = np.arange(450 - 225, 450)
    else:
        test = np.sort(train_test_split(np.arange(450), test_size=0.5, random_state=1)[1])
    _, champion_test = train_test_split(np.arange(300), test_size=0.33, random_state=42)
    expected = (test >= 300) | np.isin(test, champion_test)

    mask, why = clean_rows(champion, file_digest(new, (old.stat().st_size,)), 450, test)

    np.testing.assert_array_equal(mask, expected)
    assert 0 < (~mask).sum() < len(test) and "were in its training part (split=random" in why


def test_another_file_has_no_clean_rows(tmp_path: Path) -> None:
    old = write_csv(tmp_path / "old.csv", signal_frame(300, seed=0))
    other = write_csv(tmp_path / "other.csv", signal_frame(450, seed=2))
    mask, why = clean_rows(trained_on(old, 300, "time"), file_digest(other), 450, np.arange(300, 450))
    assert not mask.any() and "not this file nor a verified prefix" in why
    mask, why = clean_rows(None, file_digest(other), 450, np.arange(300, 450))
    assert not mask.any() and "not recorded" in why


# --- end to end through the steps --------------------------------------------------------------


def promote_first(data_file: Path, tmp_path: Path, **params: object) -> None:
    predictions = tmp_path / "first.csv"
    trained = train_model(data_file=data_file, predictions_file=predictions, num_boost_round=10, **params)
    evaluated = evaluate_model(predictions_file=predictions)
    assert evaluated
    evaluate_run = MlflowClient().search_runs(
        ["0"], "tags.`mlflow.runName` = 'evaluate_model'", order_by=["attributes.start_time DESC"]
    )[0]
    assert register_model(train_run_id=trained.run_id, evaluate_run_id=evaluate_run.info.run_id).promoted


@pytest.mark.slow
def test_train_scores_the_champion_only_on_rows_it_never_trained_on(tmp_path: Path, tracking_uri) -> None:
    # The champion trained with split=random on the old file; the new file appends 400 days.
    old = write_csv(tmp_path / "old.csv", signal_frame(600, seed=0))
    promote_first(old, tmp_path, split="random")
    new = write_csv(tmp_path / "new.csv", pd.concat([signal_frame(600, seed=0), signal_frame(400, seed=1)]))

    predictions = tmp_path / "second.csv"
    trained = train_model(data_file=new, predictions_file=predictions, num_boost_round=10, test_size=0.5)

    test = np.arange(500, 1000)
    _, champion_test = train_test_split(np.arange(600), test_size=config.TEST_SIZE, random_state=42)
    clean = (test >= 600) | np.isin(test, champion_test)
    tags = MlflowClient().get_run(trained.run_id).data.tags
    assert tags[config.TAG_CHAMPION_STATUS] == "scored"
    assert tags[config.TAG_CHAMPION_ROWS_COMPARED] == str(clean.sum())
    assert tags[config.TAG_DATA_SIZE] == str(new.stat().st_size) and tags[config.TAG_DATA_ROWS] == "1000"
    written = pd.read_csv(predictions)
    np.testing.assert_array_equal(written["champion_proba"].notna().to_numpy(), clean)

    evaluate_model(predictions_file=predictions)
    evaluate_run = MlflowClient().search_runs(
        ["0"], "tags.`mlflow.runName` = 'evaluate_model'", order_by=["attributes.start_time DESC"]
    )[0]
    evaluation = mlflow.artifacts.load_dict(f"runs:/{evaluate_run.info.run_id}/evaluation.json")
    assert evaluation["champion_comparison"]["n_rows"] == clean.sum()
    result = register_model(train_run_id=trained.run_id, evaluate_run_id=evaluate_run.info.run_id)
    champion_check = next(check for check in result.decision.checks if check.name == "champion")
    assert champion_check.values["rows_compared"] == clean.sum()
    decision = mlflow.artifacts.load_dict(
        f"runs:/{MlflowClient().search_runs(['0'], order_by=['attributes.start_time DESC'])[0].info.run_id}"
        f"/{config.DECISION_ARTIFACT}"
    )
    assert {c["name"]: c for c in decision["checks"]}["champion"]["values"]["rows_compared"] == clean.sum()
    version = MlflowClient().get_model_version(config.MODEL_NAME, result.version.version)
    assert version.tags[config.TAG_DATA_ROWS] == "1000"


@pytest.mark.slow
def test_a_file_rewritten_after_the_run_key_fails_training_and_registers_nothing(
    tmp_path: Path, tracking_uri
) -> None:
    data = write_csv(tmp_path / "data.csv", signal_frame(300, seed=0))
    digest_seen_by_the_driver = sha256(data)
    write_csv(data, signal_frame(300, seed=5))  # rewritten in between
    with pytest.raises(DataError, match="changed while the pipeline ran") as error:
        train_model(
            data_file=data, predictions_file=tmp_path / "p.csv", data_digest=digest_seen_by_the_driver
        )
    assert "\n" not in str(error.value)
    runs = MlflowClient().search_runs(["0"])
    assert [run.info.status for run in runs] == ["FAILED"]
    assert MlflowClient().search_registered_models() == []
    assert not (tmp_path / "p.csv").exists()
