"""Read a CSV training table.

A CSV is first parsed batch by batch straight into int8 with pyarrow, and only parsed again as
float32 when that fails, so the common file never exists as a wide table in memory.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from pystock_training.data.csv_errors import explain_csv_error
from pystock_training.data.sniff import sniff_csv
from pystock_training.data.table import (
    LABEL_COLUMN,
    Dataset,
    Layout,
    checked_dataset,
    exact_int8,
    feature_names,
    validate_table,
)
from pystock_training.digest import CHUNK_BYTES, HashingReader, open_regular
from pystock_training.errors import DataError


def load_csv(
    path: Path,
    head: bytes,
    stream: io.BufferedReader,
    reader: HashingReader,
    prefix_sizes: tuple[int, ...],
    *,
    whole: bool = True,
) -> Dataset:
    """Read the CSV whose first bytes are ``head`` from ``stream``, which hashes through ``reader``.

    ``whole``: see ``table.validate_table``.

    Raises:
        DataError: The file breaks the data contract.
    """
    sniffed = sniff_csv(path, head)
    has_index, n_columns = sniffed.has_index, sniffed.n_columns
    if n_columns < 2:
        raise DataError(path, f"needs at least 2 columns (features and label), found {n_columns}")

    layout = Layout(skip_lines=sniffed.skip_lines, column_offset=int(has_index))
    names = [*feature_names(n_columns - 1), LABEL_COLUMN]
    read_names = ["index", *names] if has_index else names
    read_options = pa_csv.ReadOptions(column_names=read_names, skip_rows=layout.skip_lines)
    streamed = _stream_small_integers(path, stream, read_options, names)
    if streamed is not None:
        return checked_dataset(path, *streamed, layout, reader.finish(), whole=whole)
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
            raise DataError(path, explain_csv_error(path, exc, read_names, layout)) from exc
        return validate_table(path, table, layout, reader.finish(), whole=whole)


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
        # pyarrow's default 1 MB blocks: larger ones only raise the peak (by 55 MB per doubling at
        # 10M rows) for no speed.
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
            whole = exact_int8(batch.column(n_features).to_numpy())
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
