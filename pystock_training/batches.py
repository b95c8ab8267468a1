"""Read a feature table batch by batch, in every format the training loader reads, labelled or not.

The scorer's input follows the data contract (docs/data.md): headerless CSV, CSV with a header
row, the upstream ``DataFrame.to_csv`` format (a leading unnamed index column, header
``,0,1,...``) or Parquet. A table with as many columns as the model has features has no labels;
one more column means the last one is the 0/1 label. Unlike ``data.load_dataset``, which holds
the whole table for training, this yields it a batch at a time, so a file of any length is read
in the memory of one batch; the bytes are hashed as they are parsed (CSV) or in a second pass
(Parquet, which is read from its footer).

Every breach raises ``DataError`` naming the file and, where it helps, the line (CSV) or row
(Parquet) and column, as the loader does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from pystock_training.data import (
    PARQUET_MAGIC,
    SNIFF_BYTES,
    csv_line_of_row,
    feature_names,
    is_number_or_null,
    sniff_csv,
)
from pystock_training.digest import FileDigest, HashingReader, file_digest
from pystock_training.errors import DataError, first_line

# Rows per batch: about 30 MB of float32 features for 14 columns. Each batch costs one model
# call (a few ms of MLflow overhead), so batches much smaller than this are slower and larger
# ones only raise the peak.
BATCH_ROWS = 1 << 19
# pyarrow fails on a CSV row longer than its block, so blocks never get smaller than this.
MIN_BLOCK_BYTES = 1 << 12
MAX_BLOCK_BYTES = 1 << 20
# The cells pyarrow reads as null (missing), besides the empty cell: its defaults.


@dataclass(frozen=True)
class Batch:
    """Consecutive rows of the table.

    Attributes:
        features: float32 matrix, one row per table row (NaN for a missing value).
        labels: int8 0/1 per row, or None when the table has no label column.
        start: Position of the first row among the table's data rows (0-based).
    """

    features: np.ndarray
    labels: np.ndarray | None
    start: int


class FeatureTable:
    """An opened table: its shape is known, its batches are read once, then its digest."""

    def __init__(self, path: Path, n_features: int, has_labels: bool, batch_rows: int) -> None:
        self.path = path
        self.n_features = n_features
        self.has_labels = has_labels
        self.rows = 0
        self._batch_rows = batch_rows
        self._digest: FileDigest | None = None

    def batches(self) -> Iterator[Batch]:
        """Every row, in file order, about ``batch_rows`` at a time.

        The reader's own pieces are smaller (pyarrow's CSV blocks): they are joined here, so
        each model call gets a large batch while the parser's memory stays that of small blocks.

        Raises:
            DataError: A cell, a row or a label breaks the contract, or the table has no rows.
        """
        pending: list[Batch] = []
        pending_rows = 0
        for part in self._parts():
            pending.append(part)
            pending_rows += len(part.features)
            if pending_rows >= self._batch_rows:
                yield _joined(pending)
                pending, pending_rows = [], 0
        if pending:
            yield _joined(pending)
        if self.rows == 0:
            raise DataError(self.path, "no data rows")
        self._digest = self._read_digest()

    @property
    def digest(self) -> FileDigest:
        """The sha256 and size of the file's bytes, once every batch has been read."""
        if self._digest is None:
            raise RuntimeError("the digest is known once every batch has been read")
        return self._digest

    def _parts(self) -> Iterator[Batch]:
        """The table in the pieces the format's reader gives, checked."""
        raise NotImplementedError

    def _read_digest(self) -> FileDigest:
        raise NotImplementedError

    def _checked(
        self, features: np.ndarray, labels: np.ndarray | None, label_nulls: np.ndarray | None
    ) -> Batch:
        """Check a piece's values and count its rows; ``labels`` still as read (float)."""
        start = self.rows
        infinite = np.isinf(features)
        if infinite.any():
            row, column = (int(value) for value in np.argwhere(infinite)[0])
            raise DataError(
                self.path, f"infinite value at {self._where(start + row)}, {self._column(column)}"
            )
        checked = None
        if labels is not None:
            if label_nulls is not None and label_nulls.any():
                row = int(np.flatnonzero(label_nulls)[0])
                raise DataError(self.path, f"missing label at {self._where(start + row)}")
            bad = np.flatnonzero((labels != 0) & (labels != 1))
            if len(bad):
                row = int(bad[0])
                raise DataError(
                    self.path, f"label {labels[row]:g} at {self._where(start + row)}, expected 0 or 1"
                )
            checked = labels.astype(np.int8)
        self.rows += len(features)
        return Batch(features, checked, start)

    def _where(self, row: int) -> str:
        return f"row {row + 1}"

    def _column(self, feature: int) -> str:
        return f"column {feature + 1}"


def _joined(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    labels = None if parts[0].labels is None else np.concatenate([part.labels for part in parts])
    return Batch(np.concatenate([part.features for part in parts]), labels, parts[0].start)


class _CsvTable(FeatureTable):
    def __init__(
        self,
        path: Path,
        n_features: int,
        has_labels: bool,
        batch_rows: int,
        stream: io.BufferedReader,
        reader: HashingReader,
        skip_lines: int,
        has_index: bool,
        line_bytes: int,
    ) -> None:
        super().__init__(path, n_features, has_labels, batch_rows)
        self._stream = stream
        self._reader = reader
        self._skip_lines = skip_lines
        self._offset = int(has_index)
        self._names = feature_names(n_features) + (["label"] if has_labels else [])
        self._read_names = ["index", *self._names] if has_index else self._names
        # pyarrow's 1 MiB default: its streaming reader holds many blocks at once, so its memory
        # grows with the block (at 10M rows 16 MiB blocks peak 470 MB above 1 MiB ones, for no
        # speed). Smaller only when a whole batch is smaller (tests).
        self._block_size = min(MAX_BLOCK_BYTES, max(batch_rows * line_bytes, MIN_BLOCK_BYTES))

    def _parts(self) -> Iterator[Batch]:
        try:
            # Every column as float32: whole flags, fractions and missing cells (NaN) alike; the
            # label too, so 0.0/1.0 labels are read and anything else is reported with its line.
            reader = pa_csv.open_csv(
                self._stream,
                read_options=pa_csv.ReadOptions(
                    column_names=self._read_names, skip_rows=self._skip_lines, block_size=self._block_size
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(self._names, pa.float32()), include_columns=self._names
                ),
            )
            for record_batch in reader:
                # A run of blank lines can make a batch with no rows.
                if record_batch.num_rows:
                    yield self._convert(record_batch)
        except pa.ArrowInvalid as exc:
            raise DataError(self.path, self._explain(exc)) from exc
        except pa.ArrowException as exc:
            raise DataError(self.path, f"not a readable CSV file ({first_line(exc)})") from exc
        except OSError as exc:
            raise DataError(self.path, f"cannot be read ({exc.strerror or first_line(exc)})") from exc

    def _read_digest(self) -> FileDigest:
        return self._reader.finish()

    def _convert(self, record_batch: pa.RecordBatch) -> Batch:
        features = np.empty((record_batch.num_rows, self.n_features), dtype=np.float32)
        for position in range(self.n_features):
            features[:, position] = record_batch.column(position).to_numpy(zero_copy_only=False)
        if not self.has_labels:
            return self._checked(features, None, None)
        label = record_batch.column(self.n_features)
        nulls = label.is_null().to_numpy(zero_copy_only=False) if label.null_count else None
        return self._checked(features, label.to_numpy(zero_copy_only=False), nulls)

    def _where(self, row: int) -> str:
        return f"line {csv_line_of_row(self.path, row, self._skip_lines)}"

    def _column(self, feature: int) -> str:
        return f"column {self._offset + feature + 1}"

    def _explain(self, exc: pa.ArrowInvalid) -> str:
        """Find what pyarrow refused (its messages carry no line numbers) by reading up to it.

        Runs only on this error path and stops at the first problem, so it reads no further
        than the batch that failed.
        """
        try:
            with self.path.open(newline="", encoding="utf-8") as handle:
                rows = csv.reader(handle)
                for row in rows:
                    if rows.line_num <= self._skip_lines or not row:
                        continue
                    if len(row) != len(self._read_names):
                        return (
                            f"ragged rows: expected {len(self._read_names)} columns at line {rows.line_num}, "
                            f"found {len(row)}"
                        )
                    for column, cell in enumerate(row[self._offset :], start=self._offset + 1):
                        if not is_number_or_null(cell):
                            return f"non-numeric value {cell!r} at line {rows.line_num}, column {column}"
        except UnicodeDecodeError:
            return "not UTF-8 text, expected a CSV or Parquet file"
        return f"not a readable CSV file ({first_line(exc)})"


class _ParquetTable(FeatureTable):
    def __init__(
        self,
        path: Path,
        n_features: int,
        has_labels: bool,
        batch_rows: int,
        parquet: pq.ParquetFile,
        columns: list[str],
    ) -> None:
        super().__init__(path, n_features, has_labels, batch_rows)
        self._parquet = parquet
        self._columns = columns

    def _parts(self) -> Iterator[Batch]:
        try:
            batches = self._parquet.iter_batches(batch_size=self._batch_rows, columns=self._columns)
            for record_batch in batches:
                if record_batch.num_rows:
                    yield self._convert(record_batch)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(self.path, f"not a readable Parquet file ({first_line(exc)})") from exc

    def _read_digest(self) -> FileDigest:
        # Parquet is read from its footer backwards, not as one stream: hashed in a second pass.
        return file_digest(self.path)

    def _convert(self, record_batch: pa.RecordBatch) -> Batch:
        features = np.empty((record_batch.num_rows, self.n_features), dtype=np.float32)
        for position in range(self.n_features):
            # Nulls become NaN; a float64 beyond float32's range becomes inf, reported below.
            with np.errstate(over="ignore"):
                features[:, position] = _numpy(record_batch.column(position))
        if not self.has_labels:
            return self._checked(features, None, None)
        label = record_batch.column(self.n_features)
        nulls = label.is_null().to_numpy(zero_copy_only=False) if label.null_count else None
        return self._checked(features, _numpy(label), nulls)


@contextmanager
def open_features(path: str | Path, n_features: int, batch_rows: int = BATCH_ROWS) -> Iterator[FeatureTable]:
    """Open a table of ``n_features`` feature columns, optionally followed by a 0/1 label column.

    ``batch_rows``: the rows per batch ``batches`` yields (the last one may be shorter, and a
    CSV batch may run a block's worth of rows longer).

    Raises:
        DataError: The file is missing, unreadable, or has another number of columns.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DataError(path, "no such file")
    if path.is_dir():
        raise DataError(path, "is a directory, expected a CSV or Parquet file")
    if not path.is_file():
        raise DataError(path, "is not a regular file")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or first_line(exc)})") from exc
    # The block's own errors (writing the output, say) pass through untouched: only reading
    # the table is translated into DataError, here and in ``batches``.
    with handle:
        yield _open(path, handle, n_features, batch_rows)


def _open(path: Path, handle: io.BufferedReader, n_features: int, batch_rows: int) -> FeatureTable:
    reader = HashingReader(handle)
    stream = io.BufferedReader(reader, SNIFF_BYTES)
    try:
        head = stream.peek(SNIFF_BYTES)[:SNIFF_BYTES]
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or first_line(exc)})") from exc
    if not head.strip():
        raise DataError(path, "file is empty")
    if head.startswith(PARQUET_MAGIC):
        return _open_parquet(path, n_features, batch_rows)
    sniffed = sniff_csv(path, head)
    return _CsvTable(
        path,
        n_features,
        _has_labels(path, sniffed.n_columns, n_features),
        batch_rows,
        stream,
        reader,
        sniffed.skip_lines,
        sniffed.has_index,
        len(sniffed.first_line) + 1,
    )


def _open_parquet(path: Path, n_features: int, batch_rows: int) -> _ParquetTable:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"not a readable Parquet file ({first_line(exc)})") from exc
    schema = parquet.schema_arrow
    # pandas stores a non-default index as extra columns and names them in its metadata; like
    # the CSV index column, they are not features (as in data/parquet.py).
    pandas_meta = schema.pandas_metadata or {}
    index_columns = {name for name in pandas_meta.get("index_columns", []) if isinstance(name, str)}
    columns = [name for name in schema.names if name not in index_columns]
    for name in columns:
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise DataError(path, f"column {name!r} is {kind}, expected numbers")
    has_labels = _has_labels(path, len(columns), n_features)
    return _ParquetTable(path, n_features, has_labels, batch_rows, parquet, columns)


def _has_labels(path: Path, n_columns: int, n_features: int) -> bool:
    """Whether the last column is the label: the file's width against the model's."""
    if n_columns == n_features:
        return False
    if n_columns == n_features + 1:
        return True
    raise DataError(
        path,
        f"has {n_columns} columns, expected {n_features} (the model's features) or {n_features + 1} "
        "(features, then the label)",
    )


def _numpy(column: pa.Array) -> np.ndarray:
    """A numeric column as float64 numpy, NaN for nulls (bools as 0/1)."""
    if pa.types.is_boolean(column.type):
        column = column.cast(pa.int8())
    return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
