"""One-line explanations of the CSV errors pyarrow reports, pointing at the line and column.

pyarrow's messages lack line numbers; the scans that find them run only on this error path, so
plain Python is fine here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from pystock_training.data.table import Layout
from pystock_training.digest import CHUNK_BYTES
from pystock_training.errors import first_line

# The general CSV path reads in pyarrow's default blocks; a line must fit in one.
READER_BLOCK_BYTES = pa_csv.ReadOptions().block_size


def explain_csv_error(path: Path, exc: pa.ArrowInvalid, names: list[str], layout: Layout) -> str:
    """Turn pyarrow's message, which lacks line numbers, into one that points at the line."""
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


def _find_bad_cell(path: Path, names: list[str], layout: Layout) -> tuple[int, int, str] | None:
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
