"""Load and validate the training table, and split it into train, validation and test rows.

The data contract (design.md): CSV (headerless or with a header row) or Parquet; the last column
is the 0/1 label and every other column a numeric feature; a leading unnamed index column, as
``DataFrame.to_csv`` writes it (header ``,0,1,...,14``), is dropped. Every contract breach raises
``DataError`` with a message that names the file and, where it helps, the line or column.

Features are held as one compact row-major matrix: int8 when every value is a whole number that
fits (the up/down flags: 1 byte a cell, 8x less than pandas' int64 default), otherwise float32
(fractions, large values, and missing values, which XGBoost takes as NaN). A CSV is first parsed
batch by batch straight into int8 with pyarrow, and only parsed again as float32 when that fails,
so the common file never exists as a wide table in memory. The label becomes int8.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split

from pystock_training import config
from pystock_training.digest import CHUNK_BYTES, FileDigest, HashingReader, open_regular
from pystock_training.errors import DataError, first_line
from pystock_training.params import float_problem

# What pyarrow's CSV reader takes for a missing value ("", "NA", "null", "NaN", ...).
NULL_TEXT = frozenset(pa_csv.ConvertOptions().null_values)

logger = logging.getLogger(__name__)

PARQUET_MAGIC = b"PAR1"
SNIFF_BYTES = 64 * 1024
# The general CSV path reads in pyarrow's default blocks; a line must fit in one.
READER_BLOCK_BYTES = pa_csv.ReadOptions().block_size
LABEL_COLUMN = "label"

# Row positions: a slice for the time split (a view, no copy at 100M rows) or an index array.
Rows = slice | np.ndarray


@dataclass(frozen=True)
class Dataset:
    """A validated training table.

    Attributes:
        path: The file it was read from, resolved.
        features: Columns named ``f0..f{n-1}`` whatever the file called them, so a model's
            signature does not depend on the file's header; all int8 or all float32 (see the
            module docstring), backed by one C-ordered matrix that ``features.to_numpy()``
            returns without a copy.
        labels: int8 array of 0/1.
        digest: The sha256 and size of the bytes these rows were parsed from, taken in the same
            pass, with the prefix digests asked for.
    """

    path: Path
    features: pd.DataFrame
    labels: np.ndarray
    digest: FileDigest

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return len(self.labels)


@dataclass(frozen=True)
class Split:
    """Row positions of the three parts; validation is carved from the training part."""

    train: Rows
    validation: Rows
    test: Rows


def feature_names(n_features: int) -> list[str]:
    """Stable positional feature names."""
    return [f"f{i}" for i in range(n_features)]


def load_dataset(path: str | Path, prefix_sizes: tuple[int, ...] = ()) -> Dataset:
    """Read and validate a training table (CSV or Parquet), hashing its bytes as they are parsed.

    ``prefix_sizes``: offsets whose prefix digests ``Dataset.digest`` keeps (see digest.py).

    Raises:
        DataError: The file is missing, unreadable or breaks the data contract.
    """
    path = Path(path).expanduser().resolve()
    try:
        with open_regular(path) as handle:
            reader = HashingReader(handle, prefix_sizes)
            # The sniffed head comes from the same stream the parser reads: one pass, one hash.
            stream = io.BufferedReader(reader, SNIFF_BYTES)
            head = stream.peek(SNIFF_BYTES)[:SNIFF_BYTES]
            if not head.strip():
                raise DataError(path, "file is empty")
            if head.startswith(PARQUET_MAGIC):
                # Parquet is read from its footer backwards, so the bytes are held once, hashed.
                table, layout = _read_parquet(path, pa.py_buffer(stream.read()))
                return _validate(path, table, layout, reader.finish())
            return _load_csv(path, head, stream, reader, prefix_sizes)
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror})") from exc


@dataclass(frozen=True)
class _Layout:
    """Where the data sits in the file, to point error messages at what a user can find."""

    skip_lines: int | None  # CSV lines before the first data row; None for Parquet (rows)
    column_offset: int = 0  # file columns before the first feature (1 with an index column)

    def where(self, path: Path, row: int) -> str:
        if self.skip_lines is None:
            return f"row {row + 1}"
        return f"line {csv_line_of_row(path, row, self.skip_lines)}"

    def column(self, feature: int) -> str:
        return f"column {self.column_offset + feature + 1}"


def _read_parquet(path: Path, content: pa.Buffer) -> tuple[pa.Table, _Layout]:
    try:
        table = pq.read_table(pa.BufferReader(content))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"not a readable Parquet file ({first_line(exc)})") from exc
    # pandas stores a non-default index (a date, say) as extra columns and lists them in its
    # metadata; like the CSV index column, they are not features.
    pandas_meta = table.schema.pandas_metadata or {}
    index_columns = {name for name in pandas_meta.get("index_columns", []) if isinstance(name, str)}
    table = table.select([name for name in table.column_names if name not in index_columns])
    if table.num_columns < 2:
        raise DataError(path, f"needs at least 2 columns (features and label), found {table.num_columns}")
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if not (
            pa.types.is_integer(column.type)
            or pa.types.is_floating(column.type)
            or pa.types.is_boolean(column.type)
        ):
            raise DataError(path, f"column {name!r} is {column.type}, expected numbers")
        columns.append(column.cast(pa.int8()) if pa.types.is_boolean(column.type) else column)
    names = [*feature_names(table.num_columns - 1), LABEL_COLUMN]
    return pa.Table.from_arrays(columns, names=names), _Layout(skip_lines=None)


@dataclass(frozen=True)
class CsvHead:
    """What the first lines of a CSV say about its layout.

    Attributes:
        skip_lines: Lines before the first data row (leading blank lines, the header).
        has_index: Whether the first column is ``DataFrame.to_csv``'s unnamed index.
        n_columns: Columns after the index, if any.
        first_line: The first non-blank line, the header if there is one.
    """

    skip_lines: int
    has_index: bool
    n_columns: int
    first_line: bytes


def sniff_csv(path: Path, head: bytes) -> CsvHead:
    """Read a CSV's layout from its first bytes (``SNIFF_BYTES`` of them).

    Raises:
        DataError: The bytes are binary, blank or not UTF-8.
    """
    if b"\x00" in head:
        raise DataError(path, "binary content, expected a CSV or Parquet file")
    lines = head.splitlines()
    # pyarrow skips empty lines but counts them in skip_rows, so leading ones are counted here.
    blank = next((i for i, line in enumerate(lines) if line), None)
    if blank is None:
        raise DataError(path, "file is empty")
    try:
        fields = next(csv.reader([lines[blank].decode("utf-8-sig")]))
    except UnicodeDecodeError as exc:
        raise DataError(path, "not UTF-8 text, expected a CSV or Parquet file") from exc
    has_header, has_index = _sniff_header(fields)
    return CsvHead(blank + int(has_header), has_index, len(fields) - int(has_index), lines[blank])


def _load_csv(
    path: Path, head: bytes, stream: io.BufferedReader, reader: HashingReader, prefix_sizes: tuple[int, ...]
) -> Dataset:
    sniffed = sniff_csv(path, head)
    has_index, n_columns = sniffed.has_index, sniffed.n_columns
    if n_columns < 2:
        raise DataError(path, f"needs at least 2 columns (features and label), found {n_columns}")

    layout = _Layout(skip_lines=sniffed.skip_lines, column_offset=int(has_index))
    names = [*feature_names(n_columns - 1), LABEL_COLUMN]
    read_names = ["index", *names] if has_index else names
    read_options = pa_csv.ReadOptions(column_names=read_names, skip_rows=layout.skip_lines)
    streamed = _stream_small_integers(path, stream, read_options, names)
    if streamed is not None:
        return _dataset(path, *streamed, layout, reader.finish())
    # Anything the int8 stream refused (a fraction, a large value, a missing cell, a typo)
    # takes the general path: float32, which either reads the file or explains what is wrong.
    # It parses the file again from its start, so it hashes it again: the digest is always of
    # the bytes the rows came from.
    with open_regular(path) as handle:
        reader = HashingReader(handle, prefix_sizes)
        try:
            table = pa_csv.read_csv(
                io.BufferedReader(reader, CHUNK_BYTES),
                read_options=read_options,
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.float32()), include_columns=names
                ),
            )
        except pa.ArrowInvalid as exc:
            raise DataError(path, _explain_csv_error(path, exc, read_names, layout)) from exc
        return _validate(path, table, layout, reader.finish())


def _stream_small_integers(
    path: Path, stream: io.BufferedReader, read_options: pa_csv.ReadOptions, names: list[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Parse the CSV batch by batch straight into an int8 matrix; None if any cell does not fit.

    Only a few MB of parsed batches exist at a time, so the peak is the int8 matrix itself,
    not a table of the whole file beside it. The matrix is sized for the most rows the file
    can hold (each row takes at least two bytes a column) and left untouched beyond the rows
    read, and untouched pages of a large allocation take no memory.
    """
    n_features = len(names) - 1
    capacity = path.stat().st_size // (2 * len(read_options.column_names)) + 1
    features = np.empty((capacity, n_features), dtype=np.int8)
    labels = np.empty(capacity, dtype=np.int8)
    rows = 0
    try:
        # pyarrow's default 1 MB blocks: larger ones only raise the peak (measured at 10M rows:
        # +55 MB per doubling) for no speed.
        # The label as float32: the contract allows 0.0/1.0 labels, and they should not send the
        # whole file down the slow path. Any label that is not a whole int8 still does, so the
        # general path reports it with its line.
        reader = pa_csv.open_csv(
            stream,
            read_options=read_options,
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names[:-1], pa.int8()) | {names[-1]: pa.float32()},
                include_columns=names,
            ),
        )
        for batch in reader:
            end = rows + batch.num_rows
            if end > capacity or any(column.null_count for column in batch.columns):
                return None
            whole = _exact_int8(batch.column(n_features).to_numpy())
            if whole is None:
                return None
            for position in range(n_features):
                features[rows:end, position] = batch.column(position).to_numpy()
            labels[rows:end] = whole
            rows = end
    except pa.ArrowException:
        # Whatever it is (a bad cell, ragged rows, bad UTF-8), the general path names it.
        return None
    return features[:rows], labels[:rows]


def _sniff_header(fields: list[str]) -> tuple[bool, bool]:
    """Tell whether the first CSV line is a header, and whether it opens an index column.

    ``DataFrame.to_csv`` writes ``,0,1,...,14`` (an empty field, then 0..n-2), or ``0,1,...,14``
    with ``index=False``. Those lines are all numbers, so they are recognised by their shape (a
    data row cannot look like that: its label would be above 1); any other line with a
    non-numeric field is a plain header.
    """
    stripped = [field.strip() for field in fields]
    if stripped[0] in ("", "Unnamed: 0") and stripped[1:] == [str(i) for i in range(len(stripped) - 1)]:
        return True, True
    if len(stripped) >= 3 and stripped == [str(i) for i in range(len(stripped))]:
        return True, False
    # A header is mostly names; a data row with a junk cell or two (or "NA", which pyarrow reads
    # as missing) is data, so the loader reports the cell instead of dropping the row.
    names = [field for field in stripped if not is_number_or_null(field)]
    has_header = len(names) > len(stripped) / 2
    return has_header, has_header and stripped[0] in ("", "Unnamed: 0")


def is_number_or_null(cell: str) -> bool:
    """Whether a CSV cell reads as a number or as missing (pyarrow's null tokens)."""
    text = cell.strip()
    if not text or text in NULL_TEXT:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _explain_csv_error(path: Path, exc: pa.ArrowInvalid, names: list[str], layout: _Layout) -> str:
    """Turn pyarrow's message, which lacks line numbers, into one that points at the line.

    The extra scans run only on this error path, so plain Python is fine here.
    """
    message = first_line(exc)
    if "straddling object" in message:
        # pyarrow's reader splits the file in blocks at line breaks; a line longer than a block
        # (a file written without line breaks, say) cannot be split.
        line, length = _find_long_line(path, READER_BLOCK_BYTES)
        return (
            f"line {line} is {length / 1e6:.1f} MB without a line break, longer than the CSV reader's "
            f"{READER_BLOCK_BYTES / 1e6:.1f} MB block; each row must be one line (is the file missing "
            "its line breaks?)"
        )
    if "Expected" in message and "columns" in message:
        line = _find_ragged_line(path, len(names))
        where = f" at line {line}" if line else ""
        return f"ragged rows: expected {len(names)} columns{where}, {message}"
    if "UTF8" in message or "UTF-8" in message:
        return "not UTF-8 text, expected a CSV or Parquet file"
    if "conversion error" in message:
        try:
            found = _find_bad_cell(path, names, layout)
        except pa.ArrowInvalid as second:
            if "UTF8" in str(second):
                return "not UTF-8 text, expected a CSV or Parquet file"
            found = None
        if found:
            row, column, value = found
            return f"non-numeric value {value!r} at {layout.where(path, row)}, column {column}"
        return f"non-numeric value ({message})"
    return f"not a readable CSV file ({message})"


def _find_long_line(path: Path, limit: int) -> tuple[int, int]:
    """The 1-based number and byte length of the first line longer than ``limit`` (else the longest)."""
    line, length, longest = 1, 0, (1, 0)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            for piece in chunk.split(b"\n")[:-1]:
                length += len(piece)
                if length > limit:
                    return line, length
                longest = max(longest, (line, length), key=lambda found: found[1])
                line, length = line + 1, 0
            length += len(chunk) - chunk.rfind(b"\n") - 1
    return max(longest, (line, length), key=lambda found: found[1])


def _find_ragged_line(path: Path, expected: int) -> int | None:
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        for row in reader:
            if row and len(row) != expected:
                return reader.line_num
    return None


def _find_bad_cell(path: Path, names: list[str], layout: _Layout) -> tuple[int, int, str] | None:
    """The first non-numeric cell: data row position, 1-based file column, its text."""
    table = pa_csv.read_csv(
        path,
        read_options=pa_csv.ReadOptions(column_names=names, skip_rows=layout.skip_lines),
        convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
    )
    for column_no, name in enumerate(names, start=1):
        if name == "index":
            continue
        text = table[name].to_pandas()
        numbers = pd.to_numeric(text, errors="coerce")
        bad = np.flatnonzero(
            numbers.isna().to_numpy() & text.notna().to_numpy() & (text.str.strip() != "").to_numpy()
        )
        if len(bad):
            return int(bad[0]), column_no, str(text.iloc[bad[0]])
    return None


def csv_line_of_row(path: Path, row: int, skip_lines: int) -> int:
    """The 1-based file line of a data row, counting the empty lines pyarrow skips."""
    seen = -1
    with path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line_no > skip_lines and line.rstrip(b"\r\n"):
                seen += 1
                if seen == row:
                    return line_no
    return row + 1 + skip_lines


def _validate(path: Path, table: pa.Table, layout: _Layout, digest: FileDigest) -> Dataset:
    _check_row_count(path, table.num_rows)
    label = table[LABEL_COLUMN]
    if label.null_count == table.num_rows and layout.skip_lines is not None:
        # A label empty on every line is not a missing label but a CSV whose lines end with a
        # comma, which adds an empty last column.
        raise DataError(
            path,
            "the last column is empty on every line (does each line end with a trailing comma?); "
            "the label must be the last column",
        )
    if label.null_count:
        raise DataError(path, f"missing label at {layout.where(path, _first_true(pc.is_null(label)))}")
    columns = table.drop_columns([LABEL_COLUMN]).columns
    return _dataset(path, _feature_matrix(columns, table.num_rows), label.to_numpy(), layout, digest)


def _check_row_count(path: Path, n_rows: int) -> None:
    if n_rows == 0:
        raise DataError(path, "no data rows")
    if n_rows < config.MIN_ROWS:
        raise DataError(path, f"too few rows: {n_rows}, need at least {config.MIN_ROWS}")


def _dataset(
    path: Path, matrix: np.ndarray, label_values: np.ndarray, layout: _Layout, digest: FileDigest
) -> Dataset:
    """Check the labels and wrap the feature matrix, without copying it."""
    _check_row_count(path, len(label_values))
    bad = np.flatnonzero((label_values != 0) & (label_values != 1))
    if len(bad):
        row = int(bad[0])
        raise DataError(path, f"label {label_values[row]:g} at {layout.where(path, row)}, expected 0 or 1")
    labels = label_values.astype(np.int8, copy=False)
    if len(np.unique(labels)) < 2:
        raise DataError(path, f"every label is {labels[0]}; training needs both classes")
    if matrix.dtype.kind == "f":
        # Checked on the float32 matrix, not the file's values: a float64 beyond float32's range
        # (Parquet) becomes inf only here. A column at a time: no full-size temporary.
        for position in range(matrix.shape[1]):
            infinite = np.flatnonzero(np.isinf(matrix[:, position]))
            if len(infinite):
                where = layout.where(path, int(infinite[0]))
                raise DataError(path, f"infinite value at {where}, {layout.column(position)}")
    features = pd.DataFrame(matrix, columns=feature_names(matrix.shape[1]), copy=False)
    logger.info(
        "loaded %s: %d rows, %d %s features, %.1f%% up",
        path,
        len(labels),
        matrix.shape[1],
        matrix.dtype,
        100 * labels.mean(),
    )
    return Dataset(path=path, features=features, labels=labels, digest=digest)


def _feature_matrix(columns: list[pa.ChunkedArray], n_rows: int) -> np.ndarray:
    """One row-major matrix of all features: int8 when every value fits exactly, else float32.

    Filled a column at a time, so the only temporaries are one column's worth.
    """
    compact = np.empty((n_rows, len(columns)), dtype=np.int8)
    for position, column in enumerate(columns):
        if column.null_count:
            break
        as_int8 = _exact_int8(column.to_numpy())
        if as_int8 is None:
            break
        compact[:, position] = as_int8
    else:
        return compact
    del compact
    wide = np.empty((n_rows, len(columns)), dtype=np.float32)
    for position, column in enumerate(columns):
        # Nulls become NaN, which XGBoost treats as missing; values beyond float32 become inf,
        # which _dataset then reports.
        with np.errstate(over="ignore"):
            wide[:, position] = column.to_numpy(zero_copy_only=False)
    return wide


def _exact_int8(values: np.ndarray) -> np.ndarray | None:
    """``values`` as int8 when every one is a whole number that fits, else None."""
    with np.errstate(invalid="ignore"):  # NaN and out-of-range floats cast to junk, caught below
        as_int8 = values.astype(np.int8)
    # A wrapped large value or a fraction (or NaN) compares unequal to itself in int8.
    return as_int8 if np.array_equal(as_int8, values) else None


def _first_true(mask: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))[0])


def split_rows(
    labels: np.ndarray,
    *,
    split: str = config.SPLIT,
    test_size: float = config.TEST_SIZE,
    random_state: int = config.RANDOM_STATE,
    validation_fraction: float = config.VALIDATION_FRACTION,
    source: str | Path = "data",
) -> Split:
    """Split rows into train, validation and test parts.

    ``time`` keeps file order: the last ``test_size`` of rows are the test set, and the last
    ``validation_fraction`` of the rest validate. Overlapping sliding windows in a random split
    would put near-copies of test rows in training. ``random`` is the original 67/33 shuffle;
    its test rows are kept in file order, which the gate's block bootstrap relies on.

    Raises:
        DataError: A part would be empty or the train or test part would hold a single class.
    """
    if split not in config.SPLITS:
        raise DataError(source, f"unknown split {split!r}, expected one of {', '.join(config.SPLITS)}")
    problem = float_problem("test_size", test_size)
    if problem:
        raise DataError(source, problem)
    n_rows = len(labels)
    # Same rounding as sklearn's train_test_split, so both splits size the test set alike.
    n_test = math.ceil(test_size * n_rows)
    n_fit = n_rows - n_test
    n_validation = math.ceil(validation_fraction * n_fit)
    if n_test < 1 or n_fit - n_validation < 1 or n_validation < 1:
        raise DataError(source, f"{n_rows} rows are too few for test_size={test_size}")

    if split == "time":
        parts = Split(
            train=slice(0, n_fit - n_validation),
            validation=slice(n_fit - n_validation, n_fit),
            test=slice(n_fit, n_rows),
        )
    else:
        fit, test = _random_fit_test(n_rows, test_size, random_state)
        train, validation = train_test_split(fit, test_size=n_validation, random_state=random_state)
        parts = Split(train=train, validation=validation, test=test)

    for part in ("train", "test"):
        classes = np.unique(labels[getattr(parts, part)])
        if len(classes) < 2:
            raise DataError(
                source,
                f"the {part} part of the {split} split holds only label {classes[0]}; "
                "it needs both classes (use more rows or another test_size)",
            )
    return parts


def holdout_rows(n_rows: int, *, split: str, test_size: float, random_state: int) -> Rows:
    """The test part's row positions that ``split_rows`` gives a table of ``n_rows`` rows."""
    if split == "time":
        return slice(n_rows - math.ceil(test_size * n_rows), n_rows)
    return _random_fit_test(n_rows, test_size, random_state)[1]


def _random_fit_test(n_rows: int, test_size: float, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    fit, test = train_test_split(np.arange(n_rows), test_size=test_size, random_state=random_state)
    return fit, np.sort(test)
