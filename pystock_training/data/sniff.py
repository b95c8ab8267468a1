"""Tell a file's format and a CSV's layout from its first bytes.

Shared by the training loader and the scorer's batch reader (batches.py), so both read the same
files the same way.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pyarrow.csv as pa_csv

from pystock_training.errors import DataError

# What pyarrow's CSV reader takes for a missing value ("", "NA", "null", "NaN", ...).
NULL_TEXT = frozenset(pa_csv.ConvertOptions().null_values)

PARQUET_MAGIC = b"PAR1"
SNIFF_BYTES = 64 * 1024


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
