"""Read a Parquet training table."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pystock_training.data.table import LABEL_COLUMN, Layout, feature_names
from pystock_training.errors import DataError, first_line


def read_parquet(path: Path, content: pa.Buffer) -> tuple[pa.Table, Layout]:
    """The file's columns as features ``f0..`` and ``LABEL_COLUMN``, pandas index columns dropped.

    Raises:
        DataError: The bytes are not Parquet, or a column is not numeric or there are too few.
    """
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
    return pa.Table.from_arrays(columns, names=names), Layout(skip_lines=None)
