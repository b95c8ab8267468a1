"""Write a synthetic training table of any size, in the shipped file's format, by streaming.

    .venv/bin/python benchmarks/generate_data.py --rows 100000000 --output /tmp/walk.csv

The rows are 15-wide sliding windows over one up/down walk (row i = flags[i : i + 15]: 14 features,
then the label), headerless, one ``0,1,...`` line of exactly 30 bytes per row, like
data/training/data.csv. The walk is a two-state Markov chain that starts "down" and goes up with
probability 0.55 after an up day and 0.48 after a down day: a weak but real signal in the last
feature, so early stopping keeps more than one round, as on the real data.

Memory stays O(chunk_rows) whatever the row count; the output does not depend on chunk_rows (one
generator, seeded once, draws the same numbers in the same order however they are chunked).
"""

from __future__ import annotations

import logging
import sys
import time
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


def write_dataset(path: str | Path, n_rows: int, seed: int = 0, chunk_rows: int = CHUNK_ROWS) -> Path:
    """Write ``n_rows`` sliding-window rows of a seeded walk to ``path``, atomically.

    Raises:
        ValueError: ``n_rows`` or ``chunk_rows`` is below 1.
    """
    if n_rows < 1 or chunk_rows < 1:
        raise ValueError(f"n_rows and chunk_rows must be at least 1, got {n_rows} and {chunk_rows}")
    path = Path(path)
    rng = np.random.default_rng(seed)
    # Atomic: a killed run leaves no partial file under the real name, which a cache would trust.
    with atomic_write(path) as handle:
        # The walk starts "down"; the first chunk also draws the 14 days before row 0's label.
        carry = np.empty(0, dtype=np.uint8)
        previous = 0
        written = 0
        while written < n_rows:
            rows = min(chunk_rows, n_rows - written)
            fresh = walk_flags(rng, rows + N_COLUMNS - 1 - len(carry), previous)
            flags = np.concatenate([carry, fresh])
            handle.write(format_rows(flags))
            carry = flags[-(N_COLUMNS - 1) :]
            previous = int(flags[-1])
            written += rows
    return path


@click.command()
@click.option("--rows", type=click.IntRange(min=1), required=True, help="Number of data rows.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the walk.")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="CSV file to write."
)
@click.option("--chunk-rows", type=click.IntRange(min=1), default=CHUNK_ROWS, show_default=True)
def main(rows: int, seed: int, output: Path, chunk_rows: int) -> None:
    """Write a headerless 0/1 CSV of ROWS sliding windows over a seeded up/down walk."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    write_dataset(output, rows, seed=seed, chunk_rows=chunk_rows)
    elapsed = time.monotonic() - started
    logger.info("wrote %s: %d rows, %.2f GB in %.1fs", output, rows, rows * LINE_BYTES / 1e9, elapsed)


if __name__ == "__main__":
    main()
