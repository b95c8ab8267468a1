"""The data contract: every accepted format loads to the same table, every breach is one clear line."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from pystock_training import config
from pystock_training.data import holdout_rows, load_dataset, split_rows
from pystock_training.errors import DataError

N_ROWS = config.MIN_ROWS + 10
N_FEATURES = 14
# (row, column) of feature cells left empty: missing features are allowed and become NaN.
MISSING_CELLS = ((3, 5), (10, 0))


def make_table(
    n_rows: int = N_ROWS, n_features: int = N_FEATURES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Random 0/1 features (plus a few non-binary and missing cells) and labels holding both classes."""
    rng = np.random.default_rng(seed)
    features = rng.integers(0, 2, size=(n_rows, n_features)).astype(np.float64)
    # Values exact in float32, so the expected frame needs no tolerance.
    features[7, 2] = 0.5
    features[8, n_features - 1] = -2.5
    for row, column in MISSING_CELLS:
        if column < n_features:
            features[row, column] = np.nan
    labels = rng.integers(0, 2, size=n_rows)
    labels[:2] = (0, 1)
    return features, labels


FEATURES, LABELS = make_table()


def cell(value: float) -> str:
    return "" if np.isnan(value) else f"{value:g}"


def csv_text(
    features: np.ndarray, labels: np.ndarray, label_format: str = "{:d}", newline: str = "\n"
) -> str:
    """Headerless CSV in the shipped file's style (``0,1,1,...``)."""
    rows = [
        ",".join([*(cell(value) for value in row), label_format.format(label)])
        for row, label in zip(features, labels, strict=True)
    ]
    return newline.join(rows) + newline


def upstream_frame(features: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """The upstream feature job's frame: integer column names 0..14, int labels last."""
    frame = pd.DataFrame(features)
    frame[features.shape[1]] = labels.astype(np.int64)
    return frame


def named_frame(features: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(features, columns=[f"c{i}" for i in range(features.shape[1])])
    frame["label"] = labels.astype(np.int64)
    return frame


def write_headerless(path: Path) -> None:
    path.write_text(csv_text(FEATURES, LABELS))


def write_headerless_crlf(path: Path) -> None:
    path.write_bytes(csv_text(FEATURES, LABELS, newline="\r\n").encode())


def write_float_labels_csv(path: Path) -> None:
    path.write_text(csv_text(FEATURES, LABELS, label_format="{:.1f}"))


def write_plain_header(path: Path) -> None:
    header = ",".join([*(chr(ord("a") + i) for i in range(N_FEATURES)), "label"])
    path.write_text(header + "\n" + csv_text(FEATURES, LABELS))


def write_to_csv_default(path: Path) -> None:
    upstream_frame(FEATURES, LABELS).to_csv(path)
    # Guard the premise: this is the `,0,1,...,14` header plus an index column.
    first_line = path.read_text().splitlines()[0]
    assert first_line == "," + ",".join(str(i) for i in range(N_FEATURES + 1))


def write_to_csv_named_with_index(path: Path) -> None:
    named_frame(FEATURES, LABELS).to_csv(path)
    assert path.read_text().startswith(",c0,c1,")


def write_to_csv_float_labels(path: Path) -> None:
    pd.DataFrame(np.column_stack([FEATURES, LABELS])).to_csv(path)


def write_parquet(path: Path) -> None:
    named_frame(FEATURES, LABELS).to_parquet(path)


def write_parquet_no_index(path: Path) -> None:
    named_frame(FEATURES, LABELS).to_parquet(path, index=False)


def write_parquet_index_true(path: Path) -> None:
    named_frame(FEATURES, LABELS).to_parquet(path, index=True)


def write_parquet_non_default_index(path: Path) -> None:
    frame = named_frame(FEATURES, LABELS)
    frame.index = np.arange(N_ROWS) * 2 + 7
    frame.to_parquet(path)


def write_parquet_float_labels(path: Path) -> None:
    frame = named_frame(FEATURES, LABELS)
    frame["label"] = frame["label"].astype(np.float64)
    frame.to_parquet(path, index=False)


INT_FEATURES = (np.nan_to_num(FEATURES) > 0).astype(np.int8)


def write_parquet_int_features(path: Path) -> None:
    # Integer features cannot hold the missing and fractional cells, so this file has its own.
    frame = pd.DataFrame(INT_FEATURES)
    frame.columns = [str(c) for c in frame.columns]
    frame["label"] = LABELS.astype(bool)
    frame.to_parquet(path)


GOOD_FORMATS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "headerless": ("data.csv", write_headerless),
    "headerless_crlf": ("data.csv", write_headerless_crlf),
    "float_labels": ("data.csv", write_float_labels_csv),
    "plain_header": ("data.csv", write_plain_header),
    "to_csv_default": ("data.csv", write_to_csv_default),
    "to_csv_named_with_index": ("data.csv", write_to_csv_named_with_index),
    "to_csv_float_labels": ("data.csv", write_to_csv_float_labels),
    "parquet": ("data.parquet", write_parquet),
    "parquet_no_index": ("data.parquet", write_parquet_no_index),
    "parquet_index_true": ("data.parquet", write_parquet_index_true),
    "parquet_non_default_index": ("data.parquet", write_parquet_non_default_index),
    "parquet_float_labels": ("data.parquet", write_parquet_float_labels),
}


def expected_features(features: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(features.astype(np.float32), columns=[f"f{i}" for i in range(features.shape[1])])


@pytest.mark.parametrize("fmt", list(GOOD_FORMATS))
def test_every_format_loads_to_the_same_table(tmp_path: Path, fmt: str) -> None:
    name, write = GOOD_FORMATS[fmt]
    path = tmp_path / name
    write(path)

    dataset = load_dataset(path)

    assert dataset.path == path.resolve()
    assert dataset.n_rows == N_ROWS
    assert list(dataset.features.columns) == [f"f{i}" for i in range(N_FEATURES)]
    # The shared table has fractional and missing cells, so every column is float32.
    assert (dataset.features.dtypes == np.float32).all()
    assert dataset.labels.dtype == np.int8
    pd.testing.assert_frame_equal(
        dataset.features.reset_index(drop=True), expected_features(FEATURES), check_exact=True
    )
    np.testing.assert_array_equal(dataset.labels, LABELS.astype(np.int8))


def test_integer_and_boolean_parquet_columns_load(tmp_path: Path) -> None:
    path = tmp_path / "ints.parquet"
    write_parquet_int_features(path)

    dataset = load_dataset(path)

    assert (dataset.features.dtypes == np.int8).all()
    np.testing.assert_array_equal(dataset.features.to_numpy(), INT_FEATURES)
    np.testing.assert_array_equal(dataset.labels, LABELS.astype(np.int8))


@pytest.mark.parametrize(
    ("cells", "expected_dtype"),
    [
        (["0", "1"], np.int8),
        (["0.0", "1.0"], np.int8),  # whole numbers written as floats still fit in a byte
        (["-128", "127"], np.int8),
        (["0", "128"], np.float32),  # one value past int8's range widens every column
        (["0", "0.25"], np.float32),
        (["0", ""], np.float32),  # a missing cell needs NaN
    ],
)
def test_features_are_held_in_the_narrowest_exact_type(
    tmp_path: Path, cells: list[str], expected_dtype: type
) -> None:
    rng = np.random.default_rng(3)
    choice = rng.integers(0, 2, size=(N_ROWS, N_FEATURES))
    text = np.array(cells)[choice]
    path = tmp_path / "data.csv"
    path.write_text(
        "".join(",".join([*row, str(label)]) + "\n" for row, label in zip(text, LABELS, strict=True))
    )

    features = load_dataset(path).features

    assert (features.dtypes == expected_dtype).all()
    matrix = features.to_numpy()
    # One row-major block, handed to XGBoost as is: no copy per use.
    assert matrix.flags.c_contiguous
    assert np.shares_memory(matrix, features.to_numpy())
    expected = pd.to_numeric(pd.Series(text.ravel()), errors="coerce").to_numpy().reshape(text.shape)
    np.testing.assert_array_equal(matrix.astype(np.float64), expected)


@pytest.mark.parametrize("fmt", ["headerless", "plain_header", "to_csv_default", "parquet"])
def test_missing_feature_values_become_nan(tmp_path: Path, fmt: str) -> None:
    name, write = GOOD_FORMATS[fmt]
    path = tmp_path / name
    write(path)

    features = load_dataset(path).features.to_numpy()

    assert sorted(zip(*np.nonzero(np.isnan(features)), strict=True)) == sorted(MISSING_CELLS)


def test_feature_count_follows_the_file(tmp_path: Path) -> None:
    features, labels = make_table(n_features=3)
    path = tmp_path / "narrow.csv"
    path.write_text(csv_text(features, labels))

    dataset = load_dataset(path)

    assert list(dataset.features.columns) == ["f0", "f1", "f2"]
    pd.testing.assert_frame_equal(dataset.features, expected_features(features))


def lines_with(features: np.ndarray, labels: np.ndarray, line: int, text: str) -> str:
    """Headerless CSV whose 1-based ``line`` is replaced by ``text``."""
    rows = csv_text(features, labels).splitlines()
    rows[line - 1] = text
    return "\n".join(rows) + "\n"


def headerless_with_cell(line: int, column: int, value: str) -> Callable[[Path], None]:
    """Headerless CSV with the cell at 1-based (line, column) set to ``value``."""

    def write(path: Path) -> None:
        rows = [row.split(",") for row in csv_text(FEATURES, LABELS).splitlines()]
        rows[line - 1][column - 1] = value
        path.write_text("\n".join(",".join(row) for row in rows) + "\n")

    return write


def header_with_cell(line: int, column: int, value: str) -> Callable[[Path], None]:
    """CSV with a header row; ``line`` counts the header as line 1."""

    def write(path: Path) -> None:
        write_plain_header(path)
        rows = [row.split(",") for row in path.read_text().splitlines()]
        rows[line - 1][column - 1] = value
        path.write_text("\n".join(",".join(row) for row in rows) + "\n")

    return write


def parquet_with_label(row: int, value: float | None) -> Callable[[Path], None]:
    """Parquet whose 1-based ``row`` has label ``value`` (None for missing)."""

    def write(path: Path) -> None:
        frame = named_frame(FEATURES, LABELS)
        frame["label"] = frame["label"].astype("Float64")
        frame.loc[row - 1, "label"] = pd.NA if value is None else value
        frame.to_parquet(path, index=False)

    return write


def parquet_with_feature(row: int, column: int, value: float) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        frame = named_frame(FEATURES, LABELS)
        frame.iloc[row - 1, column - 1] = value
        frame.to_parquet(path, index=False)

    return write


def write_rows(n_rows: int, *, labels: np.ndarray | None = None) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        features, default_labels = make_table(n_rows=n_rows)
        path.write_text(csv_text(features, default_labels if labels is None else labels))

    return write


def write_string_column_parquet(path: Path) -> None:
    frame = named_frame(FEATURES, LABELS)
    frame["c3"] = "up"
    frame.to_parquet(path, index=False)


def write_one_column_parquet(path: Path) -> None:
    pd.DataFrame({"label": LABELS}).to_parquet(path, index=False)


def write_junk(path: Path) -> None:
    junk = bytearray(np.random.default_rng(1).integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    junk[0:2] = b"\x07\x00"  # a NUL early, whatever the random bytes hold
    path.write_bytes(bytes(junk))


LAST_COLUMN = N_FEATURES + 1

# id: (file name, writer or None for "do not create", regex the problem part must match)
BAD_INPUTS: dict[str, tuple[str, Callable[[Path], None] | None, str]] = {
    "missing_file": ("absent.csv", None, r"no such file"),
    "directory": ("folder.csv", lambda p: p.mkdir(), r"is a directory"),
    "empty": ("data.csv", lambda p: p.write_bytes(b""), r"file is empty"),
    "whitespace_only": ("data.csv", lambda p: p.write_text("  \n\t\n \r\n"), r"file is empty"),
    "header_only": ("data.csv", lambda p: p.write_text("a,b,c,label\n"), r"no data rows"),
    "to_csv_header_only": (
        "data.csv",
        lambda p: upstream_frame(FEATURES[:0], LABELS[:0]).to_csv(p),
        r"no data rows",
    ),
    "non_numeric_feature": (
        "data.csv",
        headerless_with_cell(8, 3, "abc"),
        r"non-numeric value 'abc' at line 8, column 3$",
    ),
    # One junk cell on the first line makes it neither a header nor a row to drop: it is reported.
    "non_numeric_feature_on_line_1": (
        "data.csv",
        headerless_with_cell(1, 3, "abc"),
        r"non-numeric value 'abc' at line 1, column 3$",
    ),
    "non_numeric_feature_after_header": (
        "data.csv",
        header_with_cell(5, 2, "up"),
        r"non-numeric value 'up' at line 5, column 2$",
    ),
    "non_numeric_label": (
        "data.csv",
        headerless_with_cell(12, LAST_COLUMN, "yes"),
        rf"non-numeric value 'yes' at line 12, column {LAST_COLUMN}$",
    ),
    "label_2": ("data.csv", headerless_with_cell(9, LAST_COLUMN, "2"), r"label 2 at line 9, expected 0 or 1"),
    "label_minus_1": (
        "data.csv",
        headerless_with_cell(N_ROWS, LAST_COLUMN, "-1"),
        rf"label -1 at line {N_ROWS}, expected 0 or 1",
    ),
    "label_half": (
        "data.csv",
        headerless_with_cell(4, LAST_COLUMN, "0.5"),
        r"label 0.5 at line 4, expected 0 or 1",
    ),
    "label_2_after_header": (
        "data.csv",
        header_with_cell(9, LAST_COLUMN, "2"),
        r"label 2 at line 9, expected 0 or 1",
    ),
    "label_2_parquet": ("data.parquet", parquet_with_label(6, 2.0), r"label 2 at row 6, expected 0 or 1"),
    "missing_label": ("data.csv", headerless_with_cell(11, LAST_COLUMN, ""), r"missing label at line 11$"),
    "missing_label_nan": (
        "data.csv",
        headerless_with_cell(11, LAST_COLUMN, "NaN"),
        r"missing label at line 11$",
    ),
    "missing_label_parquet": ("data.parquet", parquet_with_label(3, None), r"missing label at row 3$"),
    "ragged_short": (
        "data.csv",
        lambda p: p.write_text(lines_with(FEATURES, LABELS, 7, "0,1,0")),
        rf"ragged rows: expected {LAST_COLUMN} columns at line 7\b",
    ),
    "ragged_long": (
        "data.csv",
        lambda p: p.write_text(lines_with(FEATURES, LABELS, 20, ",".join(["1"] * (LAST_COLUMN + 1)))),
        rf"ragged rows: expected {LAST_COLUMN} columns at line 20\b",
    ),
    "too_few_rows": (
        "data.csv",
        write_rows(config.MIN_ROWS - 1),
        rf"too few rows: {config.MIN_ROWS - 1}, need at least {config.MIN_ROWS}",
    ),
    "single_class": (
        "data.csv",
        write_rows(N_ROWS, labels=np.ones(N_ROWS, dtype=int)),
        r"every label is 1; training needs both classes",
    ),
    "binary_junk": ("data.csv", write_junk, r"binary content"),
    "non_utf8_text": (
        "data.csv",
        lambda p: p.write_bytes(b"caf\xe9,b,label\n" + csv_text(FEATURES, LABELS).encode()),
        r"not UTF-8 text",
    ),
    "corrupt_parquet": (
        "data.parquet",
        lambda p: p.write_bytes(b"PAR1" + b"this is not a parquet body" * 10),
        r"not a readable Parquet file",
    ),
    "parquet_string_column": (
        "data.parquet",
        write_string_column_parquet,
        r"column 'c3' is \w*string, expected numbers",
    ),
    "one_column_csv": (
        "data.csv",
        lambda p: p.write_text("\n".join(str(v) for v in LABELS) + "\n"),
        r"needs at least 2 columns \(features and label\), found 1",
    ),
    "one_column_parquet": (
        "data.parquet",
        write_one_column_parquet,
        r"needs at least 2 columns \(features and label\), found 1",
    ),
    "infinite_feature": (
        "data.csv",
        headerless_with_cell(13, 4, "inf"),
        r"infinite .*\bat line 13\b.*\bcolumn 4$",
    ),
    "negative_infinite_feature": (
        "data.csv",
        headerless_with_cell(2, 1, "-inf"),
        r"infinite .*\bat line 2\b.*\bcolumn 1$",
    ),
    "infinite_feature_parquet": (
        "data.parquet",
        parquet_with_feature(5, 6, np.inf),
        r"infinite .*\bat row 5\b.*\bcolumn 6$",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_naming_file_and_problem(tmp_path: Path, case: str) -> None:
    name, write, problem = BAD_INPUTS[case]
    path = tmp_path / name
    if write is not None:
        write(path)

    with pytest.raises(DataError, match=rf"^{re.escape(str(path.resolve()))}: ") as caught:
        load_dataset(path)

    error = caught.value
    assert re.search(problem, error.problem), error.problem
    assert error.path == str(path.resolve())
    assert "\n" not in str(error)
    assert "\r" not in str(error)


def test_relative_path_is_reported_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(DataError, match=re.escape(str(tmp_path.resolve() / "nope.csv"))):
        load_dataset("nope.csv")


# Edge cases at the loader's boundaries: encodings, blank lines and index columns.


def test_non_utf8_byte_after_the_first_line_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    rows = csv_text(FEATURES, LABELS).encode().splitlines()
    rows[5] = b"\xe9" + rows[5][1:]
    path.write_bytes(b"\n".join(rows) + b"\n")

    with pytest.raises(DataError, match=re.escape(str(path.resolve()))):
        load_dataset(path)


def test_leading_blank_line_is_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "blank_first.csv"
    path.write_text("\n" + csv_text(FEATURES, LABELS))

    assert load_dataset(path).n_rows == N_ROWS


def test_to_csv_without_index_loads(tmp_path: Path) -> None:
    path = tmp_path / "no_index.csv"
    upstream_frame(FEATURES, LABELS).to_csv(path, index=False)
    assert path.read_text().startswith("0,1,2,")

    dataset = load_dataset(path)

    np.testing.assert_array_equal(dataset.labels, LABELS.astype(np.int8))


def test_parquet_named_index_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "dated.parquet"
    frame = named_frame(FEATURES, LABELS)
    frame.index = pd.Index(pd.date_range("2024-01-01", periods=N_ROWS), name="date")
    frame.to_parquet(path)

    dataset = load_dataset(path)

    np.testing.assert_array_equal(dataset.labels, LABELS.astype(np.int8))


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "gappy.csv"
    rows = csv_text(FEATURES, LABELS).splitlines()
    rows.insert(3, "")  # line 4 is blank
    bad = rows[9].split(",")
    bad[-1] = "2"
    rows[9] = ",".join(bad)  # line 10 of the file
    path.write_text("\n".join(rows) + "\n")

    with pytest.raises(DataError) as caught:
        load_dataset(path)

    assert "at line 10," in caught.value.problem, caught.value.problem


# split_rows


def alternating(n_rows: int) -> np.ndarray:
    return np.arange(n_rows) % 2


def positions(rows: slice | np.ndarray, n_rows: int) -> np.ndarray:
    return np.arange(n_rows)[rows]


@pytest.mark.parametrize(
    ("n_rows", "test_size", "train", "validation", "test"),
    [
        # 100 * 0.33 = 33 test rows; 67 left, ceil(13.4) = 14 validate; 53 train.
        (100, 0.33, (0, 53), (53, 67), (67, 100)),
        # ceil(9.9) = 10 test rows; 20 left, ceil(4.0) = 4 validate.
        (30, 0.33, (0, 16), (16, 20), (20, 30)),
        # ceil(10.5) = 11 test rows; 10 left, ceil(2.0) = 2 validate.
        (21, 0.5, (0, 8), (8, 10), (10, 21)),
        # ceil(4.2) = 5 test rows; 16 left, ceil(3.2) = 4 validate.
        (21, 0.2, (0, 12), (12, 16), (16, 21)),
    ],
)
def test_time_split_by_hand(
    n_rows: int,
    test_size: float,
    train: tuple[int, int],
    validation: tuple[int, int],
    test: tuple[int, int],
) -> None:
    parts = split_rows(alternating(n_rows), split="time", test_size=test_size)

    np.testing.assert_array_equal(positions(parts.train, n_rows), np.arange(*train))
    np.testing.assert_array_equal(positions(parts.validation, n_rows), np.arange(*validation))
    np.testing.assert_array_equal(positions(parts.test, n_rows), np.arange(*test))


@pytest.mark.parametrize("n_rows", [30, 47, 101, 300, 1000])
@pytest.mark.parametrize("test_size", [0.1, 0.25, 0.33, 0.5, 0.7])
def test_time_split_keeps_file_order(n_rows: int, test_size: float) -> None:
    parts = split_rows(alternating(n_rows), split="time", test_size=test_size)

    n_test = math.ceil(test_size * n_rows)
    n_fit = n_rows - n_test
    n_validation = math.ceil(config.VALIDATION_FRACTION * n_fit)
    train, validation, test = (positions(p, n_rows) for p in (parts.train, parts.validation, parts.test))
    np.testing.assert_array_equal(test, np.arange(n_fit, n_rows))
    np.testing.assert_array_equal(
        positions(holdout_rows(n_rows, split="time", test_size=test_size, random_state=0), n_rows), test
    )
    np.testing.assert_array_equal(validation, np.arange(n_fit - n_validation, n_fit))
    np.testing.assert_array_equal(train, np.arange(0, n_fit - n_validation))
    np.testing.assert_array_equal(np.sort(np.concatenate([train, validation, test])), np.arange(n_rows))


@pytest.mark.parametrize("n_rows", [30, 101, 500])
@pytest.mark.parametrize("test_size", [0.2, 0.33])
@pytest.mark.parametrize("random_state", [0, 42, 7])
def test_random_split_matches_sklearn_and_partitions(
    n_rows: int, test_size: float, random_state: int
) -> None:
    labels = alternating(n_rows)

    parts = split_rows(labels, split="random", test_size=test_size, random_state=random_state)

    # The original job's split: train_test_split on the rows; the test part in file order.
    _, expected_test = train_test_split(np.arange(n_rows), test_size=test_size, random_state=random_state)
    np.testing.assert_array_equal(positions(parts.test, n_rows), np.sort(expected_test))
    np.testing.assert_array_equal(
        positions(
            holdout_rows(n_rows, split="random", test_size=test_size, random_state=random_state), n_rows
        ),
        positions(parts.test, n_rows),
    )
    train, validation, test = (positions(p, n_rows) for p in (parts.train, parts.validation, parts.test))
    n_fit = n_rows - len(test)
    assert len(validation) == math.ceil(config.VALIDATION_FRACTION * n_fit)
    assert not set(train) & set(validation)
    assert not set(train) & set(test)
    assert not set(validation) & set(test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, validation, test])), np.arange(n_rows))


def test_random_split_is_deterministic_per_random_state() -> None:
    labels = alternating(200)

    first = split_rows(labels, split="random", random_state=3)
    again = split_rows(labels, split="random", random_state=3)
    other = split_rows(labels, split="random", random_state=4)

    for part in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(first, part), getattr(again, part))
    assert not np.array_equal(first.test, other.test)


def test_default_split_is_time() -> None:
    parts = split_rows(alternating(100))

    np.testing.assert_array_equal(positions(parts.test, 100), np.arange(67, 100))


def last_third_up(n_rows: int = 60) -> np.ndarray:
    labels = alternating(n_rows)
    labels[-(n_rows // 3) :] = 1
    return labels


def first_part_down(n_rows: int = 60) -> np.ndarray:
    labels = alternating(n_rows)
    labels[: 2 * n_rows // 3] = 0
    return labels


@pytest.mark.parametrize(
    ("labels", "kwargs", "problem"),
    [
        (
            last_third_up(),
            {"split": "time", "test_size": 0.33},
            r"the test part of the time split holds only label 1",
        ),
        (first_part_down(), {"split": "time"}, r"the train part of the time split holds only label 0"),
        (alternating(60), {"split": "shuffle"}, r"unknown split 'shuffle', expected one of time, random"),
        (alternating(60), {"test_size": 0.0}, r"test_size must be between 0 and 1, got 0.0"),
        (alternating(60), {"test_size": 1.0}, r"test_size must be between 0 and 1, got 1.0"),
        (alternating(60), {"test_size": -0.2}, r"test_size must be between 0 and 1"),
        (alternating(60), {"test_size": 1.5}, r"test_size must be between 0 and 1"),
        (alternating(60), {"test_size": float("nan")}, r"test_size must be between 0 and 1"),
        (alternating(2), {"test_size": 0.33}, r"2 rows are too few for test_size=0.33"),
    ],
    ids=[
        "single_class_test",
        "single_class_train",
        "unknown_split",
        "test_size_0",
        "test_size_1",
        "test_size_negative",
        "test_size_above_1",
        "test_size_nan",
        "too_few_rows",
    ],
)
def test_split_errors_name_the_source(labels: np.ndarray, kwargs: dict, problem: str) -> None:
    with pytest.raises(DataError, match=r"^/data/in\.csv: ") as caught:
        split_rows(labels, source="/data/in.csv", **kwargs)

    assert re.search(problem, caught.value.problem), caught.value.problem
    assert "\n" not in str(caught.value)


def test_random_split_draws_test_rows_from_the_whole_file() -> None:
    # Labels that fail the time split: shuffled, the test part holds both classes.
    parts = split_rows(last_third_up(), split="random", test_size=0.33)

    assert set(last_third_up()[parts.test]) == {0, 1}


def test_a_float64_beyond_float32_is_reported_as_infinite(tmp_path: Path) -> None:
    # It passes a check on the file's float64 values and only overflows in the float32 matrix.
    features = np.zeros((N_ROWS, 2))
    features[1, 0] = 1e300
    frame = pd.DataFrame(features, columns=["a", "b"]).assign(label=LABELS)
    path = tmp_path / "huge.parquet"
    frame.to_parquet(path)

    with pytest.raises(DataError, match=r"infinite value at row 2, column 1$"):
        load_dataset(path)


def test_labels_are_judged_before_infinite_features(tmp_path: Path) -> None:
    # The order of checks is part of the message a user sees: the label first, as always.
    features, labels = make_table()
    features[7, 1] = np.inf
    labels = labels.copy()
    labels[9] = 2
    path = tmp_path / "both.csv"
    path.write_text(csv_text(features, labels))

    with pytest.raises(DataError, match=r"label 2 at line 10, expected 0 or 1"):
        load_dataset(path)


def test_a_fraction_after_the_first_block_widens_the_whole_table(tmp_path: Path) -> None:
    # The int8 stream gives up mid-file and the float32 path reads everything again.
    rng = np.random.default_rng(4)
    flags = rng.integers(0, 2, size=(200_000, 3))
    lines = [",".join(map(str, row)) for row in flags]
    lines[-1] = f"0.5,{flags[-1, 1]},{flags[-1, 2]}"
    path = tmp_path / "late.csv"
    path.write_text("\n".join(lines) + "\n")

    dataset = load_dataset(path)

    assert (dataset.features.dtypes == np.float32).all()
    assert dataset.features.iloc[-1, 0] == 0.5
    np.testing.assert_array_equal(dataset.features.to_numpy()[:-1], flags[:-1, :2])
    np.testing.assert_array_equal(dataset.labels, flags[:, 2])


@pytest.mark.parametrize("missing", ["NA", "null", "NaN", "N/A", ""])
def test_a_first_row_with_missing_values_is_data_not_a_header(tmp_path: Path, missing: str) -> None:
    # pyarrow reads these as missing; taking the line for a header would drop a row silently.
    path = tmp_path / "data.csv"
    lines = csv_text(FEATURES, LABELS).splitlines()
    cells = lines[0].split(",")
    cells[2] = cells[4] = missing
    path.write_text("\n".join([",".join(cells), *lines[1:]]) + "\n")
    dataset = load_dataset(path)
    assert dataset.n_rows == len(LABELS)
    assert np.isnan(dataset.features.iloc[0, 2]) and np.isnan(dataset.features.iloc[0, 4])
