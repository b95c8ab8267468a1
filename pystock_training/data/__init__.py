"""Load and validate the training table, and split it into train, validation and test rows.

The data contract (design.md): CSV (headerless or with a header row) or Parquet; the last column
is the 0/1 label and every other column a numeric feature; a leading unnamed index column, as
``DataFrame.to_csv`` writes it (header ``,0,1,...,14``), is dropped. Every contract breach raises
``DataError`` with a message that names the file and, where it helps, the line or column.

``load_dataset`` reads the file once, hashing it as it parses. The parts: ``sniff`` (the format
and a CSV's layout from the first bytes), ``csv_read`` and ``parquet`` (the two formats),
``csv_errors`` (pyarrow's CSV errors made into lines a user can act on), ``table`` (the
``Dataset`` and the checks every row passes), ``split`` (train, validation and test rows).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pyarrow as pa

from pystock_training.data.csv_errors import READER_BLOCK_BYTES
from pystock_training.data.csv_read import load_csv
from pystock_training.data.parquet import read_parquet
from pystock_training.data.sniff import (
    NULL_TEXT,
    PARQUET_MAGIC,
    SNIFF_BYTES,
    CsvHead,
    is_number_or_null,
    sniff_csv,
)
from pystock_training.data.split import Rows, Split, holdout_rows, split_rows
from pystock_training.data.table import LABEL_COLUMN, Dataset, csv_line_of_row, feature_names, validate_table
from pystock_training.digest import HashingReader, open_regular
from pystock_training.errors import DataError

__all__ = [
    "LABEL_COLUMN",
    "NULL_TEXT",
    "PARQUET_MAGIC",
    "READER_BLOCK_BYTES",
    "SNIFF_BYTES",
    "CsvHead",
    "Dataset",
    "Rows",
    "Split",
    "csv_line_of_row",
    "feature_names",
    "holdout_rows",
    "is_number_or_null",
    "load_dataset",
    "sniff_csv",
    "split_rows",
]

logger = logging.getLogger(__name__)


def load_dataset(path: str | Path, prefix_sizes: tuple[int, ...] = (), *, whole: bool = True) -> Dataset:
    """Read and validate a training table (CSV or Parquet), hashing its bytes as they are parsed.

    ``prefix_sizes``: offsets whose prefix digests ``Dataset.digest`` keeps (see digest.py).
    ``whole=False`` reads one part of a partitioned table (see ``table.validate_table``).

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
                table, layout = read_parquet(path, pa.py_buffer(stream.read()))
                dataset = validate_table(path, table, layout, reader.finish(), whole=whole)
            else:
                dataset = load_csv(path, head, stream, reader, prefix_sizes, whole=whole)
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror})") from exc
    features = dataset.features.to_numpy()
    log = logger.info if whole else logger.debug
    log(
        "loaded %s: %d rows, %d %s features, %.1f%% up",
        path,
        dataset.n_rows,
        features.shape[1],
        features.dtype,
        100 * dataset.labels.mean(),
    )
    return dataset
