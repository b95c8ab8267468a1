"""Reading a table split over part files (see sources.py): part by part, each checked on its own.

Every part is checked against the data contract on its own, and an error names the part (and its
line). The checks of the table as a whole (enough rows, both classes) apply to all the rows.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import fsspec
import numpy as np

from pystock_training.data.table import Dataset, Layout, checked_dataset
from pystock_training.digest import CHUNK_BYTES
from pystock_training.errors import DataError, first_line
from pystock_training.sources import Part, list_parts, manifest_digest, source_name

logger = logging.getLogger(__name__)


def load_part(part: Part) -> Dataset:
    """Read and check one part (``whole=False``): errors name the part, and its line.

    A remote part is copied to a private temporary file first, because the CSV error paths
    re-read the file to find the line; the error still names the part's URL.

    Raises:
        DataError: The part is unreadable or breaks the data contract.
    """
    from pystock_training.data import load_dataset

    if part.is_local:
        return load_dataset(part.url, whole=False)
    with tempfile.TemporaryDirectory(prefix="pystock-part-") as scratch:
        local = Path(scratch) / part.name
        try:
            with fsspec.open(part.url, "rb") as source, local.open("wb") as target:
                shutil.copyfileobj(source, target, CHUNK_BYTES)
        except (OSError, ValueError) as exc:
            raise DataError(part.url, f"cannot be read ({first_line(exc)})") from exc
        try:
            dataset = load_dataset(local, whole=False)
        except DataError as exc:
            raise DataError(part.url, exc.problem) from None
    return Dataset(part.url, dataset.features, dataset.labels, dataset.digest)


def load_parts(data_file: str | Path) -> Dataset:
    """All the parts as one ``Dataset`` (the local engine), checked part by part, then as a whole.

    The features are int8 only when every part's are; a float32 part makes the whole table
    float32, as a single file with one fractional cell would be.

    Raises:
        DataError: A part breaks the data contract (named), the parts disagree on their columns,
            or the table as a whole does (too few rows, a single class).
    """
    parts = list_parts(data_file)
    loaded = []
    for part in parts:
        dataset = load_part(part)
        if loaded and dataset.features.shape[1] != loaded[0].features.shape[1]:
            raise DataError(
                part.url,
                f"has {dataset.features.shape[1]} feature columns, the first part "
                f"({parts[0].name}) has {loaded[0].features.shape[1]}",
            )
        loaded.append(dataset)
    dtype = np.int8 if all(d.features.dtypes.iloc[0] == np.int8 for d in loaded) else np.float32
    matrix = np.concatenate([d.features.to_numpy().astype(dtype, copy=False) for d in loaded])
    labels = np.concatenate([d.labels for d in loaded])
    digest = manifest_digest([(d.digest.sha256, d.digest.size) for d in loaded])
    dataset = checked_dataset(source_name(data_file), matrix, labels, Layout(skip_lines=None), digest)
    logger.info(
        "loaded %d parts of %s: %d rows, %d %s features, %.1f%% up",
        len(parts),
        data_file,
        dataset.n_rows,
        matrix.shape[1],
        matrix.dtype,
        100 * labels.mean(),
    )
    return dataset
