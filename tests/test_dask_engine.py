"""The dask engine: its pure pieces on real part files, then train_model on an embedded cluster.

The slow tests share one embedded ``LocalCluster`` (what ``cluster.dask_client("")`` starts) and
pass its address to train_model, which connects to it as it would to any scheduler.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from mlflow import MlflowClient

from pystock_training import config, dask_engine
from pystock_training.cluster import (
    check_scheduler,
    cluster_failures,
    dask_client,
    n_workers_of,
    run_bounded,
    scheduler_address,
)
from pystock_training.data.split import split_rows
from pystock_training.distinct import MAX_CODES, CodeSpace
from pystock_training.errors import DataError, PystockError
from pystock_training.handoff import predictions_parts, read_predictions
from pystock_training.model import predict_proba
from pystock_training.sources import Part, list_parts, source_digest
from pystock_training.steps.train_model import train_model
from tests.dask_cluster import float_frame, walk_frame, write_parts

N_FLAGS = 14


def scanned(folder: Path) -> tuple[list[Part], list[dask_engine.PartScan]]:
    parts = list_parts(folder)
    return parts, [dask_engine.scan_part(part) for part in parts]


@pytest.fixture
def walk_parts(tmp_path: Path) -> Path:
    """1,000 rows of flags in parts of 250, 250, 250, 250."""
    write_parts(walk_frame(1_000, seed=3), tmp_path / "walk", 4)
    return tmp_path / "walk"


# --- The engine's pieces, run here on real part files (no cluster) -------------------------------


def test_scan_part_reads_and_checks_a_part(walk_parts: Path) -> None:
    parts, scans = scanned(walk_parts)
    whole = walk_frame(1_000, seed=3).to_numpy()
    assert [scan.rows for scan in scans] == [250] * 4
    assert {scan.n_features for scan in scans} == {N_FLAGS}
    first = whole[:250]
    np.testing.assert_array_equal(scans[0].low, first[:, :-1].min(axis=0))
    np.testing.assert_array_equal(scans[0].high, first[:, :-1].max(axis=0))
    assert scans[0].positives == int(first[:, -1].sum())
    # Its digest is its file's; the scans together give the folder's manifest digest.
    assert dask_engine.table_digest(scans) == source_digest(walk_parts)
    assert scans[2].size == Path(parts[2].url).stat().st_size


def test_scan_part_of_floats_has_no_flag_ranges(tmp_path: Path) -> None:
    write_parts(float_frame(100), tmp_path / "floats", 2)
    _, scans = scanned(tmp_path / "floats")
    assert all(scan.low is None and scan.high is None for scan in scans)
    assert dask_engine.code_space(scans) is None


@pytest.mark.parametrize(("sizes", "test_size"), [((250, 250, 250, 250), 0.33), ((31, 400, 69), 0.2)])
def test_layout_cuts_the_parts_where_split_rows_cuts_the_whole_table(
    tmp_path: Path, sizes: tuple[int, ...], test_size: float
) -> None:
    frame = walk_frame(sum(sizes), seed=5)
    folder = tmp_path / "parts"
    folder.mkdir()
    start = 0
    for index, size in enumerate(sizes):
        frame.iloc[start : start + size].to_parquet(folder / f"part-{index}.parquet", index=False)
        start += size
    parts, scans = scanned(folder)
    layout = dask_engine.layout_of(str(folder), parts, scans, test_size)
    assert layout.rows == sizes
    assert layout.offsets == tuple(int(o) for o in np.cumsum((0, *sizes[:-1])))
    assert layout.n_rows == sum(sizes)
    split = split_rows(frame.iloc[:, -1].to_numpy(), split="time", test_size=test_size)
    assert (layout.train_end, layout.fit_end) == (split.validation.start, split.test.start)
    # overlapping() names exactly the parts that hold rows of a range.
    for low, high in [(0, 1), (0, layout.n_rows), (layout.fit_end, layout.n_rows), (sizes[0], sizes[0] + 1)]:
        expected = [
            index
            for index, (offset, rows) in enumerate(zip(layout.offsets, sizes, strict=True))
            if set(range(offset, offset + rows)) & set(range(low, high))
        ]
        assert layout.overlapping(low, high) == expected


def test_layout_checks_the_whole_table(tmp_path: Path) -> None:
    folder = tmp_path / "few"
    frame = walk_frame(20, seed=1)
    write_parts(frame, folder, 2)
    parts, scans = scanned(folder)
    with pytest.raises(DataError, match=rf"^{folder}: too few rows: 20, need at least {config.MIN_ROWS}$"):
        dask_engine.layout_of(str(folder), parts, scans, 0.33)
    ups = tmp_path / "ups"
    frame = walk_frame(100, seed=1)
    frame.iloc[:, -1] = 1
    write_parts(frame, ups, 2)
    parts, scans = scanned(ups)
    with pytest.raises(DataError, match=rf"^{ups}: every label is 1; training needs both classes$"):
        dask_engine.layout_of(str(ups), parts, scans, 0.33)


def test_code_space_of_flags_and_beyond_the_limit(walk_parts: Path) -> None:
    _, scans = scanned(walk_parts)
    space = dask_engine.code_space(scans)
    assert space is not None and space.n_codes == 2**N_FLAGS
    # One float part makes the table float: no codes.
    float_scan = dask_engine.PartScan(10, N_FLAGS, None, None, 5, "0" * 64, 1)
    assert dask_engine.code_space([*scans, float_scan]) is None
    # int8 columns too wide to count by code: 100**14 codes.
    wide = dask_engine.PartScan(
        10, N_FLAGS, np.zeros(N_FLAGS, np.int8), np.full(N_FLAGS, 99, np.int8), 5, "", 1
    )
    assert 100**N_FLAGS > MAX_CODES
    assert dask_engine.code_space([*scans, wide]) is None
    # The ranges of all parts count, not the first part's.
    low, high = np.zeros(N_FLAGS, np.int8), np.ones(N_FLAGS, np.int8)
    low[0], high[0] = -1, 2
    widened = dask_engine.code_space([*scans, dask_engine.PartScan(10, N_FLAGS, low, high, 5, "", 1)])
    assert widened is not None and widened.n_codes == 4 * 2 ** (N_FLAGS - 1)
    assert list(widened.low) == [-1] + [0] * (N_FLAGS - 1)


def by_code(space: CodeSpace, counts: dask_engine.RowCounts | None) -> tuple[np.ndarray, np.ndarray]:
    """A part's row counts as per-code totals and positives in the table's code space."""
    totals, positives = np.zeros(space.n_codes, np.int64), np.zeros(space.n_codes, np.int64)
    if counts is not None:
        codes = space.encode(counts.rows)
        assert len(np.unique(codes)) == len(codes)  # distinct rows
        totals[codes], positives[codes] = counts.totals, counts.positives
    return totals, positives


def test_row_counts_are_the_distinct_rows_with_their_counts_and_positives() -> None:
    frame = walk_frame(3_000, seed=8)
    matrix, labels = frame.iloc[:, :-1].to_numpy(np.int8), frame.iloc[:, -1].to_numpy(np.int8)
    counts = dask_engine.row_counts(matrix, labels)
    assert counts is not None
    expected = frame.groupby(list(frame.columns[:-1]))[frame.columns[-1]].agg(["size", "sum"])
    got = {
        tuple(row): (total, positive)
        for row, total, positive in zip(counts.rows.tolist(), counts.totals, counts.positives, strict=True)
    }
    assert got == {key: tuple(value) for key, value in zip(expected.index, expected.to_numpy(), strict=True)}
    assert counts.totals.sum() == len(frame) and counts.positives.sum() == labels.sum()
    # Floats are not counted; nor is an empty range.
    assert dask_engine.row_counts(matrix.astype(np.float32), labels) is None
    assert dask_engine.row_counts(matrix[:0], labels[:0]) is None


def test_part_counts_add_up_to_the_counts_of_the_whole_table(walk_parts: Path) -> None:
    parts, scans = scanned(walk_parts)
    layout = dask_engine.layout_of(str(walk_parts), parts, scans, 0.33)
    space = dask_engine.code_space(scans)
    assert space is not None
    whole = walk_frame(1_000, seed=3).to_numpy().astype(np.int8)
    # Ranges that start and end inside parts, and one that no part but the last reaches.
    ranges = ((0, layout.train_end), (layout.train_end, layout.fit_end), (990, 1_000))
    totals = [np.zeros(space.n_codes, np.int64) for _ in ranges]
    positives = [np.zeros(space.n_codes, np.int64) for _ in ranges]
    for part, offset, scan in zip(parts, layout.offsets, scans, strict=True):
        counts = dask_engine.count_rows(part, offset, ranges)
        assert len(counts) == len(ranges)
        if offset + 250 <= 990:
            assert counts[2] is None
        for position, part_counts in enumerate(counts):
            total, positive = by_code(space, part_counts)
            totals[position] += total
            positives[position] += positive
        # What the scan counted is the part's rows counted over its whole range.
        whole_part = dask_engine.count_rows(part, offset, ((offset, offset + 250),))[0]
        for mine, theirs in zip(by_code(space, scan.counts), by_code(space, whole_part), strict=True):
            np.testing.assert_array_equal(mine, theirs)
    for (low, high), total, positive in zip(ranges, totals, positives, strict=True):
        codes = space.encode(whole[low:high, :-1])
        np.testing.assert_array_equal(total, np.bincount(codes, minlength=space.n_codes))
        np.testing.assert_array_equal(
            positive, np.bincount(codes, weights=whole[low:high, -1], minlength=space.n_codes)
        )


def booster_on(frame: pd.DataFrame, rounds: int, seed: int) -> xgb.Booster:
    features = frame.iloc[:, :-1].set_axis([f"f{i}" for i in range(N_FLAGS)], axis=1)
    matrix = xgb.DMatrix(features, label=frame.iloc[:, -1])
    params = {"objective": "binary:logistic", "max_depth": 3, "seed": seed}
    return xgb.train(params, matrix, num_boost_round=rounds)


def test_predict_part_predicts_the_parts_test_rows_and_the_champion_on_its_clean_rows(
    walk_parts: Path,
) -> None:
    parts, scans = scanned(walk_parts)
    layout = dask_engine.layout_of(str(walk_parts), parts, scans, 0.33)
    whole = walk_frame(1_000, seed=3)
    booster, champion = booster_on(whole.iloc[:600], 20, 0), booster_on(whole.iloc[:500], 10, 1)
    # The champion trained on rows up to 850: only the test rows past it are compared.
    task = dask_engine.PredictTask(booster, champion, clean_start=850, threshold=0.5, prior=0.25)
    # Part 2 holds rows 500..749, of which the test rows start at fit_end (670).
    predicted = dask_engine.predict_part(parts[2], layout.offsets[2], layout.fit_end, task)
    rows = whole.iloc[layout.fit_end : 750]
    features = rows.iloc[:, :-1].set_axis([f"f{i}" for i in range(N_FLAGS)], axis=1)
    frame = pd.read_csv(io.BytesIO(predicted.csv))
    assert list(frame.columns) == [
        "y_test",
        "y_pred",
        "y_proba",
        "baseline_proba",
        "champion_proba",
        "champion_pred",
    ]
    assert predicted.rows == len(frame) == 750 - layout.fit_end
    assert predicted.positives == int(rows.iloc[:, -1].sum())
    np.testing.assert_array_equal(frame["y_test"], rows.iloc[:, -1])
    np.testing.assert_allclose(frame["y_proba"], predict_proba(booster, features), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(frame["y_pred"], (frame["y_proba"] >= 0.5).astype(int))
    assert (frame["baseline_proba"] == 0.25).all()
    # Every row of part 2 is before 850: the champion's cells are empty.
    assert frame["champion_proba"].isna().all() and frame["champion_pred"].isna().all()
    example = predicted.example
    assert example.shape == (config.EXAMPLE_ROWS, N_FLAGS) and (example.dtypes == np.float64).all()
    np.testing.assert_array_equal(example, features.iloc[: config.EXAMPLE_ROWS])

    # Part 3 (rows 750..999) is all test rows; those from 850 on are the champion's clean rows.
    frame = pd.read_csv(
        io.BytesIO(dask_engine.predict_part(parts[3], layout.offsets[3], layout.fit_end, task).csv)
    )
    features = whole.iloc[750:, :-1].set_axis([f"f{i}" for i in range(N_FLAGS)], axis=1)
    assert len(frame) == 250
    assert frame["champion_proba"].iloc[:100].isna().all()
    np.testing.assert_allclose(
        frame["champion_proba"].iloc[100:], predict_proba(champion, features.iloc[100:]), rtol=0, atol=1e-7
    )
    np.testing.assert_array_equal(
        frame["champion_pred"].iloc[100:], frame["champion_proba"].iloc[100:] >= 0.5
    )
    np.testing.assert_allclose(frame["y_proba"], predict_proba(booster, features), rtol=0, atol=1e-7)


def test_a_bad_part_is_named_with_its_row_by_the_scan(walk_parts: Path) -> None:
    parts = list_parts(walk_parts)
    frame = pd.read_parquet(parts[2].url)
    frame.iloc[41, -1] = 2
    frame.to_parquet(parts[2].url, index=False)
    with pytest.raises(DataError) as raised:
        dask_engine.scan_part(parts[2])
    assert str(raised.value) == f"{parts[2].url}: label 2 at row 42, expected 0 or 1"


def test_the_scheduler_address_is_the_one_given_else_dasks_config(monkeypatch: pytest.MonkeyPatch) -> None:
    import dask

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with dask.config.set({"scheduler-address": None}):
        assert scheduler_address("") == ""
        assert scheduler_address("tcp://10.0.0.1:8786") == "tcp://10.0.0.1:8786"
        # No address: nothing to check up front (the step starts its own cluster).
        assert check_scheduler("") is None
    # DASK_SCHEDULER_ADDRESS reaches dask's config as "scheduler-address" when dask loads it.
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://10.0.0.2:8786")
    dask.config.refresh()
    try:
        assert scheduler_address("") == "tcp://10.0.0.2:8786"
        assert scheduler_address("tcp://10.0.0.1:8786") == "tcp://10.0.0.1:8786"
    finally:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        dask.config.refresh()


# --- On an embedded cluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator:
    with dask_client("") as embedded:
        yield embedded


def summary(scan: dask_engine.PartScan) -> tuple:
    return (
        scan.rows,
        scan.n_features,
        tuple(scan.low),
        tuple(scan.high),
        scan.positives,
        scan.sha256,
        scan.size,
    )


def scan_or_fail(part: Part) -> int:
    if part.name.endswith("2.parquet"):
        raise DataError(part.url, "bad on purpose")
    return dask_engine.scan_part(part).rows


@pytest.mark.slow
def test_the_embedded_cluster_runs_tasks_and_reports_failures_in_one_line(client, walk_parts: Path) -> None:
    # One single-threaded worker process per core.
    assert n_workers_of(client) == len(os.sched_getaffinity(0))
    parts = list_parts(walk_parts)
    here = [dask_engine.scan_part(part) for part in parts]
    # run_bounded yields every call's result with its index, whatever order they finish in.
    results = dict(run_bounded(client, dask_engine.scan_part, ((part,) for part in parts)))
    assert sorted(results) == list(range(len(parts)))
    assert [summary(results[index]) for index in range(len(parts))] == [summary(scan) for scan in here]
    assert [summary(scan) for scan in dask_engine.scan(client, parts)] == [summary(scan) for scan in here]
    # A DataError raised on a worker comes back whole: the part and the problem.
    with pytest.raises(DataError) as raised:
        list(run_bounded(client, scan_or_fail, ((part,) for part in parts)))
    assert raised.value.path == parts[2].url and raised.value.problem == "bad on purpose"

    # XGBoost's collective errors run to many lines: the one that says what failed is kept.
    from xgboost.core import XGBoostError

    reason = (
        "[08:35:17] src/collective/result.cc:83: [quantile.cc:300|08:35:17]:\n\n"
        "- [allreduce.cc:39|08:35:17]: Ring allreduce small failed.\n"
        "- [allgather.cc:50|08:35:17]: Ring allgather failed, current iteration:0\n"
        "- [loop.cc:102|08:35:17]: Encountered EOF. The other end is likely closed."
    )
    with pytest.raises(PystockError) as lost, cluster_failures(client):
        raise XGBoostError(reason)
    workers = n_workers_of(client)
    assert str(lost.value) == (
        f"XGBoost training on the Dask cluster failed ({workers} of the {workers} workers it started "
        "with are left): Ring allreduce small failed."
    )


def run_of(run_id: str):
    return MlflowClient().get_run(run_id)


def only_run():
    runs = MlflowClient().search_runs(["0"])
    assert len(runs) == 1, [run.info.run_name for run in runs]
    return runs[0]


@pytest.mark.slow
def test_both_engines_train_the_same_model_on_the_same_flags(client, tmp_path: Path, tracking_uri) -> None:
    # Sliding windows of a walk: 80k rows but at most 16,384 distinct ones, so both engines
    # merge rows before training (the local engine in memory, the dask one by code counts).
    frame = walk_frame(80_000, seed=7)
    single = tmp_path / "walk.parquet"
    frame.to_parquet(single, index=False)
    write_parts(frame, tmp_path / "parts", 4)

    local = train_model(data_file=str(single), predictions_file=str(tmp_path / "local.csv"))
    dask = train_model(
        data_file=str(tmp_path / "parts"),
        predictions_file=str(tmp_path / "dask.csv"),
        engine="dask",
        dask_scheduler=client.scheduler.address,
    )
    expected, got = read_predictions(local.predictions_file), read_predictions(dask.predictions_file)
    assert [part.name for part in predictions_parts(dask.predictions_file)] == [
        "part-00000.csv",
        "part-00001.csv",
    ]
    assert len(got) == len(expected) == int(np.ceil(0.33 * 80_000))
    np.testing.assert_array_equal(got["y_test"], expected["y_test"])
    np.testing.assert_allclose(got["y_proba"], expected["y_proba"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got["y_pred"], expected["y_pred"])
    np.testing.assert_allclose(got["baseline_proba"], expected["baseline_proba"], rtol=0, atol=1e-12)

    local_run, dask_run = run_of(local.run_id), run_of(dask.run_id)
    for name in ("num_trees", "train_rows", "validation_rows", "test_rows", "fit_rows"):
        assert dask_run.data.metrics[name] == local_run.data.metrics[name], name
    # A model worth comparing: it stopped early after many rounds, on merged rows.
    assert 10 < local_run.data.metrics["num_trees"] < 300
    assert local_run.data.metrics["fit_rows"] < local_run.data.metrics["train_rows"]
    # The per-round validation loss is the same curve.
    history = MlflowClient().get_metric_history
    local_loss = [m.value for m in history(local.run_id, "validation-logloss")]
    dask_loss = [m.value for m in history(dask.run_id, "validation-logloss")]
    np.testing.assert_allclose(dask_loss, local_loss, rtol=1e-6)
    assert dask_run.data.tags[config.TAG_ENGINE] == "dask"
    assert local_run.data.tags[config.TAG_ENGINE] == "local"
    assert dask_run.data.tags[config.TAG_DASK_WORKERS] == str(n_workers_of(client))
    assert dask_run.data.tags[config.TAG_DATA_DIGEST] == source_digest(tmp_path / "parts").sha256
    assert dask_run.data.tags[config.TAG_DATA_ROWS] == "80000"
    # The logged model predicts what the parts say.
    model = mlflow.pyfunc.load_model(dask.model_uri)
    test_rows = frame.iloc[-len(got) :, :-1]
    np.testing.assert_allclose(np.asarray(model.predict(test_rows)), got["y_proba"], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_merged_rows_are_the_distinct_training_and_validation_rows(client, tmp_path: Path) -> None:
    # Parts of 50 rows: some wholly in the training rows, some wholly in the validation rows
    # (counted as they were scanned), and the ones a cut falls in (counted again).
    frame = walk_frame(1_000, seed=3)
    write_parts(frame, tmp_path / "parts", 20)
    parts, scans = scanned(tmp_path / "parts")
    layout = dask_engine.layout_of(str(tmp_path / "parts"), parts, scans, 0.33)
    assert (layout.train_end, layout.fit_end) == (536, 670)
    space = dask_engine.code_space(scans)
    train, validation = dask_engine.merged_rows(client, layout, scans, space)
    flags, label = list(frame.columns[:-1]), frame.columns[-1]
    for merged, (low, high) in (
        (train, (0, layout.train_end)),
        (validation, (layout.train_end, layout.fit_end)),
    ):
        groups = frame.iloc[low:high].groupby(flags)[label].agg(["size", "mean"])
        expected = {
            row: (size, mean) for row, (size, mean) in zip(groups.index, groups.to_numpy(), strict=True)
        }
        rows = merged.rows.to_numpy().tolist()
        got = {tuple(row): (w, y) for row, w, y in zip(rows, merged.weights, merged.labels, strict=True)}
        assert got.keys() == expected.keys()
        for row, (weight, mean) in got.items():
            assert weight == expected[row][0] and mean == pytest.approx(expected[row][1])
        assert merged.n_rows == high - low
        assert merged.positives == frame[label].iloc[low:high].sum()


@pytest.mark.slow
def test_a_part_whose_rows_hardly_repeat_is_trained_on_in_full(client, tmp_path: Path, tracking_uri) -> None:
    # 20 flags: 2**20 codes, within MAX_CODES, so the table is counted by code. Part 0's 72k
    # rows are nearly all distinct (more than MAX_PART_COUNTS); the other parts repeat 50 rows.
    rng = np.random.default_rng(0)
    n_flags = 20
    varied = rng.integers(0, 2, size=(72_000, n_flags))
    repeated = rng.integers(0, 2, size=(50, n_flags))[rng.integers(0, 50, size=66_000)]
    matrix = np.vstack([varied, repeated]).astype(np.int8)
    labels = (matrix[:, 0] ^ (rng.random(len(matrix)) < 0.2)).astype(np.int8)
    frame = pd.DataFrame(np.column_stack([matrix, labels]), columns=[str(c) for c in range(n_flags + 1)])
    folder = tmp_path / "parts"
    folder.mkdir()
    for index, (low, high) in enumerate(
        [(0, 72_000), (72_000, 94_000), (94_000, 116_000), (116_000, 138_000)]
    ):
        frame.iloc[low:high].to_parquet(folder / f"part-{index}.parquet", index=False)
    assert dask_engine.row_counts(varied.astype(np.int8), labels[:72_000]) is None

    trained = train_model(
        data_file=str(folder),
        predictions_file=str(tmp_path / "predictions.csv"),
        engine="dask",
        dask_scheduler=client.scheduler.address,
        num_boost_round=20,
    )
    split = split_rows(labels, split="time", test_size=0.33)
    metrics = run_of(trained.run_id).data.metrics
    assert metrics["train_rows"] == split.train.stop - split.train.start
    assert metrics["validation_rows"] == split.validation.stop - split.validation.start


def write_bad_part(folder: Path, suffix: str) -> tuple[Path, str]:
    """Four parts of a walk, the third with a bad cell; the part and its problem."""
    frame = walk_frame(2_000, seed=2)
    paths = write_parts(frame, folder, 4, suffix=suffix)
    bad = paths[2]
    if suffix == ".csv":
        lines = bad.read_text().splitlines(keepends=True)
        lines[122] = "up," + lines[122].split(",", 1)[1]
        bad.write_text("".join(lines))
        return bad, "non-numeric value 'up' at line 123, column 1"
    part = pd.read_parquet(bad)
    part.iloc[122, -1] = 2
    part.to_parquet(bad, index=False)
    return bad, "label 2 at row 123, expected 0 or 1"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "dask"])
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_bad_part_fails_the_run_in_one_line_naming_that_part(
    client, engine: str, suffix: str, tmp_path: Path, tracking_uri
) -> None:
    bad, problem = write_bad_part(tmp_path / "parts", suffix)
    predictions = tmp_path / "predictions.csv"
    extra = {"dask_scheduler": client.scheduler.address} if engine == "dask" else {}
    with pytest.raises(DataError) as raised:
        train_model(
            data_file=str(tmp_path / "parts"), predictions_file=str(predictions), engine=engine, **extra
        )
    message = str(raised.value)
    assert message.startswith(f"{bad}: {problem}"), message
    assert "\n" not in message
    run = only_run()
    assert run.info.status == "FAILED"
    assert run.data.tags[config.TAG_ERROR] == message
    assert config.TAG_MODEL_URI not in run.data.tags
    assert MlflowClient().search_logged_models(experiment_ids=["0"]) == []
    assert not predictions.exists()


@pytest.mark.slow
def test_float_features_train_with_xgboost_dask_and_log_each_round(
    client, tmp_path: Path, tracking_uri
) -> None:
    frame = float_frame(6_000, seed=4)
    write_parts(frame, tmp_path / "floats", 4)
    trained = train_model(
        data_file=str(tmp_path / "floats"),
        predictions_file=str(tmp_path / "predictions.csv"),
        engine="dask",
        dask_scheduler=client.scheduler.address,
        num_boost_round=60,
        early_stopping_rounds=5,
        max_depth=2,
        learning_rate=0.3,
    )
    run = run_of(trained.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[config.TAG_ENGINE] == "dask"
    assert run.data.tags[config.TAG_DASK_WORKERS] == str(n_workers_of(client))
    assert run.data.tags[config.TAG_DASK_SCHEDULER] == client.scheduler.address
    history = MlflowClient().get_metric_history
    for name in ("train-logloss", "validation-logloss"):
        steps = sorted(metric.step for metric in history(trained.run_id, name))
        assert steps == list(range(len(steps))) and len(steps) > 1, name
    losses = [m.value for m in sorted(history(trained.run_id, "validation-logloss"), key=lambda m: m.step)]
    assert losses[-1] < losses[0]
    num_trees = run.data.metrics["num_trees"]
    assert 1 <= num_trees <= min(60, len(losses))
    assert run.data.metrics["fit_rows"] == run.data.metrics["train_rows"]
    assert run.data.metrics["train_rows"] + run.data.metrics["validation_rows"] + run.data.metrics[
        "test_rows"
    ] == len(frame)
    # The booster parameters are logged by hand (autolog does not see xgboost.dask).
    assert run.data.params["objective"] == "binary:logistic"
    predictions = read_predictions(trained.predictions_file)
    test_rows = frame.iloc[-len(predictions) :]
    np.testing.assert_array_equal(predictions["y_test"], test_rows["14"])
    # The logged booster is the one that predicted: the same probabilities from the registry's view.
    model = mlflow.pyfunc.load_model(trained.model_uri)
    np.testing.assert_allclose(
        np.asarray(model.predict(test_rows.iloc[:, :-1])), predictions["y_proba"], atol=1e-6
    )
    assert predictions["y_proba"].between(0, 1).all()
    # A learnable table: clearly better than chance.
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(predictions["y_test"], predictions["y_proba"]) > 0.7


@pytest.mark.slow
def test_a_random_split_is_refused_on_the_dask_engine(client, tmp_path: Path, tracking_uri) -> None:
    write_parts(walk_frame(500), tmp_path / "parts", 2)
    with pytest.raises(PystockError) as raised:
        train_model(
            data_file=str(tmp_path / "parts"),
            predictions_file=str(tmp_path / "predictions.csv"),
            engine="dask",
            dask_scheduler=client.scheduler.address,
            split="random",
        )
    message = str(raised.value)
    assert "engine=dask takes split=time only, got split=random" in message
    assert "\n" not in message
    run = only_run()
    assert run.info.status == "FAILED"
    assert run.data.tags[config.TAG_ERROR] == message
    assert MlflowClient().search_logged_models(experiment_ids=["0"]) == []
