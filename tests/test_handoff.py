"""The predictions CSV between train_model and evaluate_model: format, atomic write, checked read."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pystock_training import handoff
from pystock_training.errors import DataError
from pystock_training.handoff import read_predictions, write_predictions

Y_TEST = np.array([0, 1, 1, 0, 1, 0])
# Includes the threshold itself and values that need all 17 digits to round-trip.
Y_PROBA = np.array([0.1, 0.5, 0.9, 0.49999999999999994, 1 / 3, 0.0])
PRIOR = 0.123456789012345678


def leftovers(folder: Path, target: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p != target)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"

    returned = write_predictions(path, Y_TEST, Y_PROBA, threshold=0.5, baseline_proba=PRIOR)
    frame = read_predictions(path)

    assert returned == path
    assert list(frame.columns) == ["y_test", "y_pred", "y_proba", "baseline_proba"]
    assert frame["y_test"].tolist() == Y_TEST.tolist()
    assert frame["y_pred"].tolist() == [0, 1, 1, 0, 0, 0]
    # Bit-exact: evaluation must score the very probabilities the model produced.
    assert frame["y_proba"].tolist() == Y_PROBA.tolist()
    assert frame["baseline_proba"].tolist() == [PRIOR] * len(Y_TEST)


def test_file_has_exactly_the_contract_columns_and_no_index(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    write_predictions(path, Y_TEST, Y_PROBA, threshold=0.5, baseline_proba=0.5)

    lines = path.read_text().splitlines()
    # Read by an independent parser: no unnamed index column, one row per prediction.
    frame = pd.read_csv(path)

    header = [name.strip('"') for name in lines[0].split(",")]
    assert header == ["y_test", "y_pred", "y_proba", "baseline_proba"]
    assert len(lines) == 1 + len(Y_TEST)
    assert list(frame.columns) == ["y_test", "y_pred", "y_proba", "baseline_proba"]
    assert lines[1].split(",")[0] == "0"
    assert lines[2].split(",")[:2] == ["1", "1"]


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.5, [0, 1, 1, 0, 0, 0]),
        (0.3, [0, 1, 1, 1, 1, 0]),
        (0.9, [0, 0, 1, 0, 0, 0]),
        (0.0, [1, 1, 1, 1, 1, 1]),
        (1.0, [0, 0, 0, 0, 0, 0]),
    ],
)
def test_y_pred_is_proba_at_or_above_threshold(tmp_path: Path, threshold: float, expected: list[int]) -> None:
    path = tmp_path / "predictions.csv"

    write_predictions(path, Y_TEST, Y_PROBA, threshold=threshold, baseline_proba=0.5)

    assert read_predictions(path)["y_pred"].tolist() == expected


def test_write_creates_the_folder_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "predictions.csv"

    write_predictions(path, Y_TEST, Y_PROBA, threshold=0.5, baseline_proba=0.5)

    assert path.is_file()
    assert leftovers(path.parent, path) == []


def test_overwrite_replaces_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    write_predictions(path, Y_TEST, Y_PROBA, threshold=0.5, baseline_proba=0.5)

    write_predictions(path, Y_TEST[:2], Y_PROBA[:2], threshold=0.5, baseline_proba=0.25)

    frame = read_predictions(path)
    assert frame["y_test"].tolist() == [0, 1]
    assert frame["baseline_proba"].tolist() == [0.25, 0.25]
    assert leftovers(tmp_path, path) == []


class WriteFailedError(RuntimeError):
    pass


@pytest.mark.parametrize("partial", [b"", b'"y_test","y_pred"\n0,1'], ids=["nothing_written", "half_written"])
def test_failed_write_keeps_the_old_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, partial: bytes
) -> None:
    path = tmp_path / "predictions.csv"
    write_predictions(path, Y_TEST, Y_PROBA, threshold=0.5, baseline_proba=0.5)
    before = path.read_bytes()

    def fail(table: object, sink: object, *args: object, **kwargs: object) -> None:
        sink.write(partial)
        sink.flush()
        raise WriteFailedError("disk full")

    monkeypatch.setattr(handoff.pa_csv, "write_csv", fail)

    with pytest.raises(WriteFailedError):
        write_predictions(path, Y_TEST[:3], Y_PROBA[:3], threshold=0.5, baseline_proba=0.9)

    assert path.read_bytes() == before
    assert leftovers(tmp_path, path) == []


def test_write_goes_to_a_sibling_temp_file_then_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The temp file must sit beside the target: a rename is atomic only within one filesystem.
    path = tmp_path / "predictions.csv"
    write_predictions(path, Y_TEST, Y_PROBA, threshold=0.5, baseline_proba=0.5)
    before = path.read_bytes()
    real_write_csv = handoff.pa_csv.write_csv
    seen: dict[str, object] = {}

    def spy(*args: object, **kwargs: object) -> None:
        seen["siblings"] = leftovers(tmp_path, path)
        seen["target_during_write"] = path.read_bytes()
        real_write_csv(*args, **kwargs)

    monkeypatch.setattr(handoff.pa_csv, "write_csv", spy)

    write_predictions(path, Y_TEST[:2], Y_PROBA[:2], threshold=0.5, baseline_proba=0.5)

    assert len(seen["siblings"]) == 1
    # Not itself a *.csv, so nothing globbing the folder for CSVs picks up a half-written file.
    assert not seen["siblings"][0].endswith(".csv")
    assert seen["target_during_write"] == before
    assert read_predictions(path)["y_test"].tolist() == [0, 1]
    assert leftovers(tmp_path, path) == []


def test_failed_first_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "predictions.csv"

    def fail(*args: object, **kwargs: object) -> None:
        raise WriteFailedError("disk full")

    monkeypatch.setattr(handoff.pa_csv, "write_csv", fail)

    with pytest.raises(WriteFailedError):
        write_predictions(path, Y_TEST, Y_PROBA, threshold=0.5, baseline_proba=0.5)

    assert list(tmp_path.iterdir()) == []


def test_extra_columns_are_allowed(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    path.write_text("y_test,y_pred,y_proba,baseline_proba,note\n1,1,0.8,0.5,a\n0,0,0.2,0.5,b\n")

    frame = read_predictions(path)

    assert frame["y_proba"].tolist() == [0.8, 0.2]
    assert "note" in frame.columns


def test_champion_columns_round_trip_and_are_checked(tmp_path: Path) -> None:
    path = write_predictions(
        tmp_path / "p.csv",
        np.array([1, 0]),
        np.array([0.8, 0.2]),
        0.5,
        0.5,
        champion_proba=np.array([0.4, 0.7]),
    )
    frame = read_predictions(path)
    assert frame["champion_proba"].tolist() == [0.4, 0.7]
    assert frame["champion_pred"].tolist() == [0, 1]  # at the same threshold as y_pred
    # Complete champion columns: no empty cells, labels as compact as the others.
    assert ",," not in path.read_text()
    assert frame["champion_pred"].dtype == np.int8

    lone = tmp_path / "lone.csv"
    lone.write_text("y_test,y_pred,y_proba,baseline_proba,champion_proba\n1,1,0.8,0.5,0.7\n0,0,0.2,0.5,0.1\n")
    with pytest.raises(DataError, match="champion_proba without champion_pred"):
        read_predictions(lone)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "y_test,y_pred,y_proba,baseline_proba,champion_proba,champion_pred\n1,1,0.8,0.5,1.7,1\n0,0,0.2,0.5,0.1,0\n"
    )
    with pytest.raises(DataError, match="champion_proba must hold probabilities"):
        read_predictions(bad)


HEADER = "y_test,y_pred,y_proba,baseline_proba\n"

# id: (file content or None for "no file", regex the problem must match)
BAD_PREDICTIONS: dict[str, tuple[str | bytes | None, str]] = {
    "missing_file": (None, r"no such predictions file"),
    "empty_file": (b"", r"not a readable predictions CSV"),
    "header_only": (HEADER, r"no rows"),
    "missing_y_proba": ("y_test,y_pred,baseline_proba\n1,1,0.5\n", r"missing column\(s\) y_proba"),
    "missing_two": ("y_test,y_proba\n1,0.5\n", r"missing column\(s\) y_pred, baseline_proba"),
    "y_test_2": (HEADER + "0,0,0.1,0.5\n2,1,0.9,0.5\n", r"column y_test must hold only 0 and 1"),
    "y_test_missing": (HEADER + "0,0,0.1,0.5\n,1,0.9,0.5\n", r"column y_test must hold only 0 and 1"),
    "y_pred_text": (HEADER + "0,no,0.1,0.5\n1,1,0.9,0.5\n", r"column y_pred must hold only 0 and 1"),
    "proba_1.5": (HEADER + "0,0,0.1,0.5\n1,1,1.5,0.5\n", r"column y_proba must hold probabilities in \[0, 1"),
    "proba_negative": (HEADER + "0,0,-0.1,0.5\n", r"column y_proba must hold probabilities in \[0, 1\]"),
    "proba_nan": (HEADER + "0,0,nan,0.5\n1,1,0.7,0.5\n", r"column y_proba must hold probabilities"),
    "baseline_inf": (HEADER + "0,0,0.1,inf\n", r"column baseline_proba must hold probabilities"),
    "ragged": (HEADER + "0,0,0.1\n", r"not a readable predictions CSV"),
}


@pytest.mark.parametrize("case", list(BAD_PREDICTIONS))
def test_bad_predictions_file_names_the_file(tmp_path: Path, case: str) -> None:
    content, problem = BAD_PREDICTIONS[case]
    path = tmp_path / "predictions.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)

    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: ") as caught:
        read_predictions(path)

    assert re.search(problem, caught.value.problem), caught.value.problem
    assert "\n" not in str(caught.value)


def test_written_file_follows_the_umask_not_mkstemps_owner_only_mode(tmp_path: Path) -> None:
    # Another user (the evaluate step in a container, say) must be able to read it.
    old = os.umask(0o022)
    try:
        path = write_predictions(tmp_path / "p.csv", np.array([0, 1]), np.array([0.2, 0.8]), 0.5, 0.5)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def big_predictions(head_rows: int, head: str, tail: str) -> str:
    """A predictions CSV whose first rows (several MB, beyond pyarrow's first block) differ from the rest."""
    return HEADER.rstrip("\n") + ",note\n" + head * head_rows + tail


@pytest.mark.parametrize(
    ("head", "tail", "column", "expected_tail"),
    [
        # write_csv writes a probability of exactly 1 as "1": the column must not become ints.
        ("1,1,1,0.5,\n", "0,0,0.43,0.5,x\n", "y_proba", 0.43),
        ("1,1,0.9,0.5,\n", "1.0,1,0.9,0.5,x\n", "y_test", 1),
        # An extra column empty at first and filled later.
        ("1,1,0.9,0.5,\n", "0,0,0.1,0.5,hello\n", "note", "hello"),
    ],
)
def test_types_do_not_follow_the_first_block(
    tmp_path: Path, head: str, tail: str, column: str, expected_tail: object
) -> None:
    path = tmp_path / "predictions.csv"
    path.write_text(big_predictions(200_000, head, tail))

    frame = read_predictions(path)

    assert len(frame) == 200_001
    assert frame[column].iloc[-1] == expected_tail
    assert frame["y_test"].dtype == np.int8
    assert frame["y_proba"].dtype == np.float64


def test_a_block_of_blank_lines_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    path.write_text(HEADER + "1,1,0.8,0.5\n" + "\n" * 3_000_000 + "0,0,0.2,0.5\n")

    frame = read_predictions(path)

    assert frame["y_proba"].tolist() == [0.8, 0.2]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("y_test,y_pred,y_proba,baseline_proba,y_proba\n1,1,0.8,0.5,0.7\n", "duplicate column(s) y_proba"),
        # A bad cell after the first block still gets the column's own message.
        (HEADER + "1,1,0.8,0.5\n" * 200_000 + "1,maybe,0.8,0.5\n", "column y_pred must hold only 0 and 1"),
        (HEADER + "1,1,0.8,0.5\n" * 200_000 + "1,1,high,0.5\n", "column y_proba must hold probabilities"),
    ],
)
def test_bad_predictions_anywhere_in_the_file_get_one_line(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "predictions.csv"
    path.write_text(content)

    with pytest.raises(DataError, match=re.escape(problem)) as caught:
        read_predictions(path)

    assert "\n" not in str(caught.value)


# Champion cells: empty on the rows the champion may have trained on.

CHAMPION_HEADER = "y_test,y_pred,y_proba,baseline_proba,champion_proba,champion_pred\n"


def test_champion_cells_are_empty_where_it_may_have_trained(tmp_path: Path) -> None:
    path = write_predictions(
        tmp_path / "p.csv",
        np.array([1, 0, 1, 0]),
        np.array([0.8, 0.2, 0.6, 0.4]),
        0.5,
        0.5,
        champion_proba=np.array([np.nan, np.nan, 0.7, 0.1]),
    )

    lines = path.read_text().splitlines()
    frame = read_predictions(path)

    assert lines[1:3] == ["1,1,0.8,0.5,,", "0,0,0.2,0.5,,"]
    assert lines[3].endswith(",0.7,1")
    assert frame["champion_proba"].isna().tolist() == [True, True, False, False]
    assert frame["champion_proba"].iloc[2:].tolist() == [0.7, 0.1]
    assert frame["champion_pred"].isna().tolist() == [True, True, False, False]
    assert frame["champion_pred"].iloc[2:].tolist() == [1, 0]
    # The other columns keep their compact types.
    assert frame["y_test"].dtype == np.int8 and frame["y_pred"].dtype == np.int8


def test_a_champion_with_no_clean_row_reads_as_all_empty(tmp_path: Path) -> None:
    path = write_predictions(
        tmp_path / "p.csv",
        np.array([1, 0]),
        np.array([0.8, 0.2]),
        0.5,
        0.5,
        champion_proba=np.full(2, np.nan),
    )
    frame = read_predictions(path)
    assert frame["champion_proba"].isna().all() and frame["champion_pred"].isna().all()


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ("1,1,0.8,0.5,0.7,1\n0,0,0.2,0.5,,0\n", "row 2: champion_proba and champion_pred must be both empty"),
        ("1,1,0.8,0.5,0.7,\n0,0,0.2,0.5,,\n", "row 1: champion_proba and champion_pred must be both empty"),
        # Only an empty cell means "not compared": written-out NaN is a bad probability.
        ("1,1,0.8,0.5,nan,1\n", "column champion_proba must hold probabilities in [0, 1]"),
        ("1,1,0.8,0.5,NA,\n", "column champion_proba must hold probabilities in [0, 1]"),
        ("1,1,0.8,0.5,1.7,1\n0,0,0.2,0.5,,\n", "column champion_proba must hold probabilities in [0, 1]"),
        ("1,1,0.8,0.5,,\n0,0,0.2,0.5,0.1,2\n", "column champion_pred must hold only 0 and 1"),
        # Empty cells stay an error everywhere else.
        ("1,1,,0.5,,\n", "column y_proba must hold probabilities in [0, 1]"),
        ("1,,0.8,0.5,0.7,1\n", "column y_pred must hold only 0 and 1"),
        ("1,1,0.8,,0.7,1\n", "column baseline_proba must hold probabilities in [0, 1]"),
        # A row number past the first block counts the rows of the blocks before it.
        ("1,1,0.8,0.5,,\n" * 200_000 + "1,1,0.8,0.5,0.7,\n", "row 200001: champion_proba and champion_pred"),
    ],
)
def test_bad_champion_cells_get_one_line(tmp_path: Path, rows: str, problem: str) -> None:
    path = tmp_path / "predictions.csv"
    path.write_text(CHAMPION_HEADER + rows)

    with pytest.raises(DataError, match=re.escape(problem)) as caught:
        read_predictions(path)

    assert "\n" not in str(caught.value)


def test_a_file_of_many_reader_blocks_is_read_whole_and_in_order(tmp_path) -> None:
    # 400k rows are about 9 MB: many of the CSV reader's blocks, as at production sizes.
    rng = np.random.default_rng(11)
    n_rows = 400_000
    y_test = rng.integers(0, 2, n_rows)
    y_proba = rng.random(n_rows)
    path = tmp_path / "predictions.csv"
    write_predictions(path, y_test, y_proba, 0.5, 0.5)
    for _ in range(5):
        frame = read_predictions(path)
        assert len(frame) == n_rows
        np.testing.assert_array_equal(frame["y_test"].to_numpy(), y_test)
        np.testing.assert_array_equal(frame["y_proba"].to_numpy(), y_proba)


# A directory of parts: each a complete predictions CSV, rows in sorted name order.


def write_parts(folder: Path, frame: pd.DataFrame, sizes: list[int]) -> Path:
    """``frame`` cut into parts of ``sizes`` rows, written as the train step's workers would."""
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    for number, size in enumerate(sizes):
        frame.iloc[start : start + size].to_csv(folder / f"part-{number:05d}.csv", index=False)
        start += size
    return folder


def test_a_directory_of_parts_reads_as_the_file_of_all_its_rows(tmp_path: Path) -> None:
    whole = write_predictions(
        tmp_path / "whole.csv",
        np.tile(Y_TEST, 3),
        np.tile(Y_PROBA, 3),
        0.5,
        PRIOR,
        champion_proba=np.tile([np.nan, 0.3, 0.7, np.nan, 0.2, 0.9], 3),
    )
    frame = read_predictions(whole)
    # Out of order on purpose: sorted name order, not creation order, is row order; an empty
    # part (a worker with no rows) and a non-part file are allowed.
    folder = tmp_path / "parts"
    write_parts(folder, pd.read_csv(whole), [7, 0, 11])
    (folder / "_SUCCESS").write_text("")

    parts = read_predictions(folder)

    pd.testing.assert_frame_equal(parts, frame)
    assert [batch.first_row for batch in handoff.iter_predictions(folder)] == [0, 7]


def test_the_sha256_of_a_directory_is_that_of_its_part_lines(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {"y_test": [1, 0, 1], "y_pred": [1, 0, 1], "y_proba": [1, 0, 1], "baseline_proba": 0.5}
    )
    folder = write_parts(tmp_path / "parts", rows, [1, 2])
    lines = "".join(
        f"{name} {hashlib.sha256((folder / name).read_bytes()).hexdigest()}\n"
        for name in ["part-00000.csv", "part-00001.csv"]
    )

    digest = handoff.predictions_sha256(folder)

    assert digest == hashlib.sha256(lines.encode()).hexdigest()
    assert read_predictions(folder, sha256=digest)["y_test"].tolist() == [1, 0, 1]
    # A renamed part changes the digest even with the same bytes.
    (folder / "part-00001.csv").rename(folder / "part-00002.csv")
    with pytest.raises(DataError, match=rf"^{re.escape(str(folder))}: changed since train_model wrote it"):
        read_predictions(folder, sha256=digest)


GOOD_PART = HEADER + "1,1,0.8,0.5\n0,0,0.2,0.5\n"

# id: (second part's content, the problem, the row named if any)
BAD_PARTS: dict[str, tuple[str | bytes, str]] = {
    "bad_label": (HEADER + "1,1,0.8,0.5\n2,1,0.8,0.5\n", r"row 2: column y_test must hold only 0 and 1"),
    "bad_proba": (HEADER + "1,1,1.8,0.5\n", r"row 1: column y_proba must hold probabilities in \[0, 1\]"),
    "text_proba": (HEADER + "1,1,0.8,0.5\n1,1,high,0.5\n", r"column y_proba must hold probabilities"),
    "other_order": ("y_pred,y_test,y_proba,baseline_proba\n1,1,0.8,0.5\n", r"its header \(y_pred,y_test"),
    "extra_column": (HEADER.rstrip("\n") + ",note\n1,1,0.8,0.5,x\n", r"differs from the first part's"),
    "empty_file": (b"", r"not a readable predictions CSV"),
    "ragged": (HEADER + "1,1,0.8\n", r"not a readable predictions CSV"),
}


@pytest.mark.parametrize("case", list(BAD_PARTS))
def test_a_bad_part_is_named_in_one_line(tmp_path: Path, case: str) -> None:
    content, problem = BAD_PARTS[case]
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "part-00000.csv").write_text(GOOD_PART)
    bad = folder / "part-00001.csv"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    (folder / "part-00002.csv").write_text(GOOD_PART)

    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))}: ") as caught:
        read_predictions(folder)

    assert re.search(problem, caught.value.problem), caught.value.problem
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({}, "no *.csv parts in the predictions directory"),
        ({"notes.txt": "x"}, "no *.csv parts in the predictions directory"),
        ({"part-00000.csv": HEADER, "part-00001.csv": HEADER}, "no rows"),
    ],
)
def test_a_directory_without_rows_is_refused(tmp_path: Path, files: dict[str, str], problem: str) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_text(content)

    with pytest.raises(DataError, match=rf"^{re.escape(str(folder))}: {re.escape(problem)}$"):
        read_predictions(folder)
    if not files:
        with pytest.raises(DataError, match=re.escape(problem)):
            handoff.predictions_sha256(folder)


def test_a_second_pass_refuses_a_part_replaced_since_the_first(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "part-00000.csv").write_text(GOOD_PART)
    (folder / "part-00001.csv").write_text(GOOD_PART)
    identities: list[handoff.PartIdentity] = []
    assert sum(batch.num_rows for batch in handoff.iter_predictions(folder, identities=identities)) == 4

    replacement = tmp_path / "new.csv"
    replacement.write_text(HEADER + "0,0,0.1,0.5\n")
    replacement.replace(folder / "part-00001.csv")

    with pytest.raises(DataError, match=r"part-00001.csv: changed while it was being evaluated"):
        list(handoff.iter_predictions(folder, columns=["y_test"], identities=identities))
