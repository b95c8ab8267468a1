"""The predictions CSV that carries the test set from train_model to evaluate_model.

It is one CSV file or a directory of CSV parts (``part-00000.csv``, ``part-00001.csv``...), each a
complete predictions CSV with the same header, whose rows in sorted name order are the test rows
in order. Columns, no index: ``y_test`` (0/1), ``y_pred`` (0/1 at the threshold), ``y_proba`` (probability
of "up"), then ``baseline_proba`` (the training prior, the naive baseline's probability) and,
when a champion was scored on the same rows, ``champion_proba`` and ``champion_pred``. Both
champion cells are empty on the rows the champion may have trained on: it is compared only on
the rows it provably never saw.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from pystock_training.errors import DataError, PystockError, first_line
from pystock_training.scratch import OUT_OF_SPACE

REQUIRED_COLUMNS = ("y_test", "y_pred", "y_proba", "baseline_proba")
CHAMPION_COLUMNS = ("champion_proba", "champion_pred")
# The only columns whose cells may be empty (together, on the same rows).
OPTIONAL_COLUMNS = frozenset(CHAMPION_COLUMNS)
LABEL_COLUMNS = frozenset({"y_test", "y_pred", "champion_pred"})
PROBABILITY_COLUMNS = frozenset({"y_proba", "baseline_proba", "champion_proba"})
# Enough of the file's start to hold its header line.
HEADER_BYTES = 64 * 1024
_LABEL_PROBLEM = "column {} must hold only 0 and 1"
_PROBABILITY_PROBLEM = "column {} must hold probabilities in [0, 1]"
_CHUNK_BYTES = 1 << 20
# Bytes of CSV the streaming reader parses at a time (pyarrow's default): larger blocks are no
# faster here and each one more in flight costs memory.
_BLOCK_BYTES = 1 << 20


@contextmanager
def atomic_write(path: Path) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` only when the block ends without error.

    A reader (or a cache that trusts whatever file is there) sees the old file or the whole new
    one, never a partial one; a failed or killed write leaves no temp file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp file sits in the target folder so the rename stays on one filesystem (atomic).
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        # mkstemp makes the file owner-only; give it the mode a plain open() would (umask).
        umask = os.umask(0)
        os.umask(umask)
        Path(tmp_name).chmod(0o666 & ~umask)
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def predictions_table(
    y_test: np.ndarray,
    y_proba: np.ndarray,
    threshold: float,
    baseline_proba: float,
    champion_proba: np.ndarray | None = None,
) -> pa.Table:
    """The hand-off columns of a set of test rows, in the contract's order.

    A NaN in ``champion_proba`` (a row the champion may have trained on) leaves both champion
    cells of that row empty.
    """
    columns = {
        "y_test": pa.array(np.asarray(y_test, dtype=np.int8)),
        "y_pred": pa.array((np.asarray(y_proba) >= threshold).astype(np.int8)),
        "y_proba": pa.array(np.asarray(y_proba, dtype=np.float64)),
        "baseline_proba": pa.array(np.full(len(y_test), baseline_proba, dtype=np.float64)),
    }
    if champion_proba is not None:
        champion = np.asarray(champion_proba, dtype=np.float64)
        absent = np.isnan(champion)
        columns["champion_proba"] = pa.array(champion, mask=absent)
        columns["champion_pred"] = pa.array((champion >= threshold).astype(np.int8), mask=absent)
    return pa.table(columns)


def write_predictions(
    path: str | Path,
    y_test: np.ndarray,
    y_proba: np.ndarray,
    threshold: float,
    baseline_proba: float,
    champion_proba: np.ndarray | None = None,
) -> Path:
    """Write the predictions CSV atomically: a reader sees the old file or the whole new one.

    See ``predictions_table`` for the columns.

    Raises:
        PystockError: The file cannot be written; one line naming it (and "no space left" when
            its filesystem is full).
    """
    table = predictions_table(y_test, y_proba, threshold, baseline_proba, champion_proba)
    return write_predictions_table(path, table)


def write_predictions_table(path: str | Path, table: pa.Table) -> Path:
    """Write a ``predictions_table`` as CSV atomically (see ``write_predictions``).

    Raises:
        PystockError: The file cannot be written.
    """
    path = Path(path)
    try:
        with atomic_write(path) as handle:
            pa_csv.write_csv(table, handle, pa_csv.WriteOptions(quoting_style="none"))
    except OSError as exc:
        # A full disk surfaces when the buffer is flushed, as an OSError without a file name.
        problem = OUT_OF_SPACE.get(exc.errno or 0) or exc.strerror or first_line(exc)
        raise PystockError(f"{path}: cannot write the predictions: {problem}") from exc
    return path


def predictions_sha256(path: str | Path) -> str:
    """The sha256 of the predictions, as train_model records it and evaluate_model checks it.

    For a file, the sha256 of its bytes. For a directory of parts, the sha256 of the text made of
    one line ``"{part_name} {part_sha256}\\n"`` per ``*.csv`` part in sorted name order: any
    part's bytes, name or presence changes it, and each part is hashed on its own.

    Raises:
        DataError: A directory holds no ``*.csv`` part.
    """
    path = Path(path)
    if path.is_dir():
        return parts_sha256([(part.name, _file_sha256(part)) for part in predictions_parts(path)])
    return _file_sha256(path)


def parts_sha256(parts: list[tuple[str, str]]) -> str:
    """A directory's sha256 from its ``(part_name, part_sha256)`` pairs in sorted name order."""
    return hashlib.sha256("".join(f"{name} {digest}\n" for name, digest in parts).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    with pa.OSFile(str(path)) as source:
        return _sha256(source)


def _sha256(source: pa.NativeFile) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: source.read(_CHUNK_BYTES), b""):
        digest.update(chunk)
    return digest.hexdigest()


def predictions_parts(path: str | Path) -> list[Path]:
    """The files holding the predictions in row order: the file, or a directory's ``*.csv`` parts by name.

    Raises:
        DataError: There is no such file or directory, or the directory holds no ``*.csv`` part.
    """
    path = Path(path)
    if path.is_dir():
        # Anything else in the folder (a writer's temp file, a _SUCCESS marker) is not a part.
        parts = sorted(part for part in path.iterdir() if part.suffix == ".csv" and part.is_file())
        if not parts:
            raise DataError(path, "no *.csv parts in the predictions directory")
        return parts
    if not path.is_file():
        raise DataError(path, "no such predictions file")
    return [path]


@dataclass(frozen=True)
class PredictionsBatch:
    """Consecutive checked rows from one part.

    ``first_row`` is the 0-based position of the batch's first row among all the rows (the
    parts before it included). ``columns`` are numpy arrays typed as ``read_predictions``
    describes; ``champion_pred`` is int8 in a batch without empty cells, float64 with NaN in one
    with them.
    """

    part: Path
    first_row: int
    columns: dict[str, np.ndarray]

    @property
    def num_rows(self) -> int:
        """The rows in the batch."""
        return len(next(iter(self.columns.values())))


@dataclass(frozen=True)
class PartIdentity:
    """A part as it was read: a second pass must read the very file the first one checked."""

    name: str
    size: int
    mtime_ns: int
    inode: int


def iter_predictions(
    path: str | Path,
    sha256: str = "",
    *,
    columns: Collection[str] | None = None,
    identities: list[PartIdentity] | None = None,
) -> Iterator[PredictionsBatch]:
    """Checked batches of a predictions file or directory of parts, in row order, never the whole table.

    Every part must have the first part's header and pass the checks ``read_predictions``
    describes; a problem is one DataError line naming the part (and the row where it helps).
    Parts with a header and no rows are allowed; no rows at all is an error. With ``sha256`` the
    predictions must hash to it (see ``predictions_sha256``), each part hashed on the same open
    file that is then parsed: a file is checked before it is parsed, a directory once its last
    part is read, before the iteration ends. ``columns`` limits the columns returned (a second
    pass). ``identities``, when empty, collects each part's size, mtime and inode as it is read;
    when filled, each part must still match them.

    Raises:
        DataError: A part is missing or malformed, the digest differs, or a part changed since
            its identity was taken.
    """
    path = Path(path)
    parts = predictions_parts(path)
    known = list(identities) if identities else None
    if known is not None and [identity.name for identity in known] != [part.name for part in parts]:
        raise DataError(path, _CHANGED.format("its parts are not the ones read"))
    header: list[str] | None = None
    digests: list[tuple[str, str]] = []
    next_row = 0
    for number, part in enumerate(parts):
        try:
            with pa.OSFile(str(part)) as source:
                identity = _identity(part, source)
                if known is not None and identity != known[number]:
                    raise DataError(part, _CHANGED.format("the part is not the file read"))
                if identities is not None and known is None:
                    identities.append(identity)
                if sha256:
                    digests.append((part.name, _sha256(source)))
                    source.seek(0)
                    if not path.is_dir():
                        _check_sha256(part, digests[0][1], sha256)
                names = _part_header(part, source)
                if header is None:
                    _check_columns(part, names)
                    header = names
                elif names != header:
                    raise DataError(
                        part,
                        f"its header ({','.join(names)}) differs from the first part's "
                        f"({parts[0].name}: {','.join(header)}); every part must have the same columns",
                    )
                for batch in _read_checked(part, source, names, columns, next_row):
                    next_row += batch.num_rows
                    yield batch
        except OSError as exc:
            raise DataError(part, f"cannot be read ({exc.strerror or first_line(exc)})") from exc
    if sha256 and path.is_dir():
        _check_sha256(path, parts_sha256(digests), sha256)
    if next_row == 0:
        raise DataError(path, "no rows")


_CHANGED = "changed while it was being evaluated ({}); re-run the evaluation"


def _identity(part: Path, source: pa.NativeFile) -> PartIdentity:
    stat = os.fstat(source.fileno())
    return PartIdentity(part.name, stat.st_size, stat.st_mtime_ns, stat.st_ino)


def read_predictions(path: str | Path, sha256: str = "") -> pd.DataFrame:
    """Read and check a predictions CSV or directory of parts, which must hash to ``sha256`` if given.

    Read batch by batch and checked as it goes, into compact columns (int8 labels, float64
    probabilities): millions of test rows never sit in memory as a whole Arrow table beside a
    pandas copy of it. The contract's columns are parsed as float64 and any others as text,
    whatever the first rows look like: a streaming reader fixes each column's type from its first
    block, and a probability column that happens to start with exact 0s and 1s is still a float.
    Empty champion cells read as NaN, and ``champion_pred`` is then float64 (as pandas would).
    The digest is checked on the same open file that is then parsed, so what is checked is what
    is read, even if the path is replaced in between. The whole table is returned: evaluate_model
    streams with ``iter_predictions`` instead.

    Raises:
        DataError: The file or a part is missing, the predictions no longer hash to ``sha256``,
            or their columns or values are wrong.
    """
    chunks: dict[str, list[np.ndarray]] = {}
    for batch in iter_predictions(path, sha256):
        for name, values in batch.columns.items():
            chunks.setdefault(name, []).append(values)
    return pd.DataFrame({name: np.concatenate(parts) for name, parts in chunks.items()}, copy=False)


def _check_sha256(path: Path, actual: str, expected: str) -> None:
    if actual != expected:
        raise DataError(
            path,
            f"changed since train_model wrote it (sha256 {actual[:12]}, the train run recorded "
            f"{expected[:12]}); refusing to evaluate it: re-run the pipeline",
        )


def _part_header(part: Path, source: pa.NativeFile) -> list[str]:
    try:
        return _header(source)
    except pa.ArrowInvalid as exc:
        raise DataError(part, f"not a readable predictions CSV ({first_line(exc)})") from exc


def _read_checked(
    path: Path, source: pa.NativeFile, names: list[str], columns: Collection[str] | None, first_row: int
) -> Iterator[PredictionsBatch]:
    wanted = names if columns is None else [name for name in names if name in columns]
    try:
        # The header by hand, then one reader: a second streaming reader on the same open file
        # reads ahead in the background and moves the position under the first (rows went
        # missing from multi-block files).
        known = LABEL_COLUMNS | PROBABILITY_COLUMNS
        reader = pa_csv.open_csv(
            source,
            read_options=pa_csv.ReadOptions(block_size=_BLOCK_BYTES),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.float64() if name in known else pa.string() for name in names},
                # Only an empty cell is missing: "nan" or "NA" in a champion column is a bad
                # value, not a row the champion may have trained on.
                null_values=[""],
                include_columns=wanted,
            ),
        )
        has_champion = all(name in wanted for name in CHAMPION_COLUMNS)
        rows_read = 0
        for batch in reader:
            # A run of blank lines can make a batch with no rows.
            if not batch.num_rows:
                continue
            checked = {
                name: _checked(path, name, column, rows_read)
                for name, column in zip(wanted, batch.columns, strict=True)
            }
            if has_champion:
                _check_champion_pairs(path, batch, rows_read)
            yield PredictionsBatch(path, first_row + rows_read, checked)
            rows_read += batch.num_rows
    except pa.ArrowInvalid as exc:
        raise DataError(path, _explain(exc, names)) from exc
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"not a readable predictions CSV ({first_line(exc)})") from exc


def _header(source: pa.NativeFile) -> list[str]:
    """The column names on the first line; the file is left at its start."""
    head = source.read(HEADER_BYTES)
    source.seek(0)
    if not head.strip():
        raise pa.ArrowInvalid("Empty CSV file")
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8-sig", errors="replace")
    return next(csv.reader([line]), [])


def _check_columns(path: Path, names: list[str]) -> None:
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise DataError(path, f"duplicate column(s) {', '.join(duplicated)}")
    missing = [column for column in REQUIRED_COLUMNS if column not in names]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}")
    present = [column for column in CHAMPION_COLUMNS if column in names]
    if present and len(present) != len(CHAMPION_COLUMNS):
        absent = " and ".join(set(CHAMPION_COLUMNS) - set(present))
        raise DataError(path, f"has {present[0]} without {absent}")


def _explain(exc: pa.ArrowInvalid, names: list[str]) -> str:
    """Name the column a conversion error is in, as the value checks would."""
    found = re.search(r"column #(\d+)", str(exc))
    column = names[int(found.group(1))] if found and int(found.group(1)) < len(names) else None
    if column in LABEL_COLUMNS:
        return _LABEL_PROBLEM.format(column)
    if column in PROBABILITY_COLUMNS:
        return _PROBABILITY_PROBLEM.format(column)
    return f"not a readable predictions CSV ({first_line(exc)})"


def _checked(path: Path, name: str, column: pa.Array, rows_before: int) -> np.ndarray:
    """One batch of one column as numpy, after checking its values where the contract says what they are."""
    values = column.to_numpy(zero_copy_only=False)
    if name not in LABEL_COLUMNS and name not in PROBABILITY_COLUMNS:
        return values
    # Nulls are NaN in ``values``; in the optional columns they are allowed and not checked.
    if name in LABEL_COLUMNS:
        good = (values == 0) | (values == 1)
    else:
        good = np.isfinite(values) & (values >= 0) & (values <= 1)
    if column.null_count and name in OPTIONAL_COLUMNS:
        good |= column.is_null().to_numpy(zero_copy_only=False)
    if not good.all():
        problem = _LABEL_PROBLEM if name in LABEL_COLUMNS else _PROBABILITY_PROBLEM
        row = rows_before + int(np.argmin(good)) + 1
        raise DataError(path, f"row {row}: {problem.format(name)}")
    if name in LABEL_COLUMNS and not column.null_count:
        return values.astype(np.int8)
    return values


def _check_champion_pairs(path: Path, batch: pa.RecordBatch, rows_before: int) -> None:
    """Both champion cells of a row are empty, or neither is."""
    empty = [batch.column(name).is_null().to_numpy(zero_copy_only=False) for name in CHAMPION_COLUMNS]
    unpaired = np.flatnonzero(empty[0] != empty[1])
    if unpaired.size:
        raise DataError(
            path,
            f"row {rows_before + int(unpaired[0]) + 1}: champion_proba and champion_pred must be both "
            "empty (a row the champion may have trained on) or both filled",
        )
