"""Write a synthetic training table of any size, in the shipped file's format, by streaming.

    .venv/bin/python benchmarks/generate_data.py --rows 100000000 --output /tmp/walk.csv
    .venv/bin/python benchmarks/generate_data.py --rows 1000000000 --output /tmp/walk --parquet-parts


The rows are 15-wide sliding windows over one up/down walk (row i = flags[i : i + 15]: 14 features,
then the label), headerless, one ``0,1,...`` line of exactly 30 bytes per row, like
data/training/data.csv. The walk is a two-state Markov chain that starts "down" and goes up with
probability 0.55 after an up day and 0.48 after a down day: a weak but real signal in the last
feature, so early stopping keeps more than one round, as on the real data.

With ``--parquet-parts`` (``write_parquet_parts``) the same rows go to a folder of Parquet files
``part-00000.parquet``, ``part-00001.parquet``, ... of ``part_rows`` rows each (the last may be
shorter), in time order: 15 int8 columns ``f0..f13`` and ``label``, one row group per chunk, zstd.

Memory stays O(chunk_rows) whatever the row count; the output does not depend on chunk_rows (one
generator, seeded once, draws the same numbers in the same order however they are chunked), and
the parts hold the CSV's rows for the same seed.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import click
import numpy as np

# Run as a script from anywhere: the project root holds the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pystock_training.handoff import atomic_write

logger = logging.getLogger("generate_data")

N_COLUMNS: Final = 15  # 14 features, then the label
LINE_BYTES: Final = 2 * N_COLUMNS  # a digit and a comma (the last one a newline) per column
P_UP_AFTER_UP: Final = 0.55
P_UP_AFTER_DOWN: Final = 0.48
CHUNK_ROWS: Final = 1_000_000
PART_ROWS: Final = 10_000_000
PARQUET_COMPRESSION: Final = "zstd"


def walk_flags(rng: np.random.Generator, n_flags: int, previous: int) -> np.ndarray:
    """The next ``n_flags`` days of the Markov walk, as uint8 0/1, after a day that was ``previous``.

    One uniform draw per day: below P_UP_AFTER_DOWN the day is up whatever came before, at or above
    P_UP_AFTER_UP it is down whatever came before, and in between it repeats the day before. That
    is the same chain as drawing from P(up | previous day), and it vectorises as a forward fill.
    """
    draws = rng.random(n_flags)
    up = draws < P_UP_AFTER_DOWN
    decided = up | (draws >= P_UP_AFTER_UP)
    last_decided = np.where(decided, np.arange(n_flags), -1)
    np.maximum.accumulate(last_decided, out=last_decided)
    # Days before the first decided one in this chunk repeat the last day of the previous chunk.
    return np.where(last_decided >= 0, up[last_decided], bool(previous)).astype(np.uint8)


def format_rows(flags: np.ndarray) -> np.ndarray:
    """The CSV bytes of every 15-wide window of ``flags``, as a (rows, 30) uint8 array of ASCII."""
    windows = np.lib.stride_tricks.sliding_window_view(flags, N_COLUMNS)
    lines = np.empty((len(windows), LINE_BYTES), dtype=np.uint8)
    lines[:, 0::2] = windows + ord("0")
    lines[:, 1::2] = ord(",")
    lines[:, -1] = ord("\n")
    return lines


def walk_windows(n_rows: int, seed: int, chunk_sizes: Iterator[int]) -> Iterator[np.ndarray]:
    """The walk's flags, one array per chunk: a chunk of ``rows`` rows is ``rows + 14`` flags.

    Row ``i`` of a chunk is ``flags[i : i + 15]``; consecutive chunks overlap by 14 flags. Chunk
    sizes come from ``chunk_sizes`` (each at least 1) until ``n_rows`` rows are out; the last chunk
    is cut to what is left.
    """
    rng = np.random.default_rng(seed)
    # The walk starts "down"; the first chunk also draws the 14 days before row 0's label.
    carry = np.empty(0, dtype=np.uint8)
    previous = 0
    written = 0
    while written < n_rows:
        rows = min(next(chunk_sizes), n_rows - written)
        fresh = walk_flags(rng, rows + N_COLUMNS - 1 - len(carry), previous)
        flags = np.concatenate([carry, fresh])
        yield flags
        carry = flags[-(N_COLUMNS - 1) :]
        previous = int(flags[-1])
        written += rows


def _check_sizes(n_rows: int, **sizes: int) -> None:
    if n_rows < 1 or min(sizes.values()) < 1:
        named = ", ".join(f"{name}={value}" for name, value in sizes.items())
        raise ValueError(f"n_rows and {', '.join(sizes)} must be at least 1, got n_rows={n_rows}, {named}")


def write_dataset(path: str | Path, n_rows: int, seed: int = 0, chunk_rows: int = CHUNK_ROWS) -> Path:
    """Write ``n_rows`` sliding-window rows of a seeded walk to ``path``, atomically.

    Raises:
        ValueError: ``n_rows`` or ``chunk_rows`` is below 1.
    """
    _check_sizes(n_rows, chunk_rows=chunk_rows)
    path = Path(path)
    # Atomic: a killed run leaves no partial file under the real name, which a cache would trust.
    with atomic_write(path) as handle:
        for flags in walk_windows(n_rows, seed, itertools.repeat(chunk_rows)):
            handle.write(format_rows(flags))
    return path


def part_name(index: int) -> str:
    """The file name of part ``index``: names sort in time order."""
    return f"part-{index:05d}.parquet"


def _parquet_chunk_sizes(n_rows: int, part_rows: int, chunk_rows: int) -> Iterator[int]:
    """Chunk sizes that never straddle a part boundary (a chunk is one row group of one part)."""
    for start in range(0, n_rows, part_rows):
        in_part = min(part_rows, n_rows - start)
        for offset in range(0, in_part, chunk_rows):
            yield min(chunk_rows, in_part - offset)


def write_parquet_parts(
    directory: str | Path,
    n_rows: int,
    seed: int = 0,
    part_rows: int = PART_ROWS,
    chunk_rows: int = CHUNK_ROWS,
) -> Path:
    """Write the rows of ``write_dataset`` as Parquet parts in ``directory``, which appears whole.

    The parts are written to a sibling ``<directory>.partial`` folder (emptied first) that is
    renamed into place at the end, so ``directory`` exists only once every part is there: a cache
    may trust it, and a reader never sees half of it.

    Raises:
        ValueError: A size is below 1.
        FileExistsError: ``directory`` exists already.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_sizes(n_rows, part_rows=part_rows, chunk_rows=chunk_rows)
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(f"{directory} exists already")
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    names = [*(f"f{i}" for i in range(N_COLUMNS - 1)), "label"]
    schema = pa.schema([(name, pa.int8()) for name in names])
    writer: pq.ParquetWriter | None = None
    parts = part_filled = 0
    try:
        for flags in walk_windows(n_rows, seed, _parquet_chunk_sizes(n_rows, part_rows, chunk_rows)):
            if writer is None:
                writer = pq.ParquetWriter(staging / part_name(parts), schema, compression=PARQUET_COMPRESSION)
                parts += 1
            rows = len(flags) - (N_COLUMNS - 1)
            # Column j of the windows is flags[j : j + rows]: contiguous, so no copy per column.
            codes = flags.view(np.int8)
            columns = [pa.array(codes[j : j + rows]) for j in range(N_COLUMNS)]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema), row_group_size=rows)
            part_filled += rows
            if part_filled == part_rows:
                writer.close()
                writer, part_filled = None, 0
        if writer is not None:
            writer.close()
            writer = None
        staging.rename(directory)
    except BaseException:
        if writer is not None:
            writer.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


@click.command()
@click.option("--rows", type=click.IntRange(min=1), required=True, help="Number of data rows.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the walk.")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="CSV file to write (a folder with --parquet-parts).",
)
@click.option("--chunk-rows", type=click.IntRange(min=1), default=CHUNK_ROWS, show_default=True)
@click.option("--parquet-parts", is_flag=True, help="Write a folder of Parquet parts instead of a CSV.")
@click.option("--part-rows", type=click.IntRange(min=1), default=PART_ROWS, show_default=True)
def main(rows: int, seed: int, output: Path, chunk_rows: int, parquet_parts: bool, part_rows: int) -> None:
    """Write a headerless 0/1 CSV (or Parquet parts) of ROWS sliding windows over a seeded up/down walk."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    if parquet_parts:
        write_parquet_parts(output, rows, seed=seed, part_rows=part_rows, chunk_rows=chunk_rows)
        size = sum(part.stat().st_size for part in output.iterdir())
    else:
        write_dataset(output, rows, seed=seed, chunk_rows=chunk_rows)
        size = rows * LINE_BYTES
    elapsed = time.monotonic() - started
    logger.info("wrote %s: %d rows, %.2f GB in %.1fs", output, rows, size / 1e9, elapsed)


if __name__ == "__main__":
    main()
