"""Build the training table from daily OHLCV prices with the upstream feature recipe.

Usage:
    python scripts/make_dataset.py PRICES.csv --output data/training/data.csv
    python scripts/make_dataset.py --arch-sp500 --output data/training/data.csv

PRICES.csv is any daily OHLCV CSV with ``Open`` and ``Close`` columns (any case), one row per
trading day in date order. ``--arch-sp500`` uses the S&P 500 prices (1999-2018) bundled with the
``arch`` package (requirements-dev.txt), which is how the shipped file was made.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pystock_training.features import going_up, make_windows

logger = logging.getLogger("make_dataset")


def read_prices(prices: Path | None, arch_sp500: bool) -> pd.DataFrame:
    """Daily prices with lower-case ``open`` and ``close`` columns, oldest first."""
    if arch_sp500:
        from arch.data import sp500

        frame = sp500.load()
    elif prices is not None:
        frame = pd.read_csv(prices)
    else:
        raise click.UsageError("give PRICES.csv or --arch-sp500")
    frame.columns = [str(column).strip().lower() for column in frame.columns]
    missing = {"open", "close"} - set(frame.columns)
    if missing:
        raise click.ClickException(f"{prices}: no {' or '.join(sorted(missing))} column")
    return frame.dropna(subset=["open", "close"])


@click.command()
@click.argument("prices", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("data/training/data.csv"),
    show_default=True,
)
@click.option("--arch-sp500", is_flag=True, help="Use the S&P 500 prices bundled with `arch`.")
def main(prices: Path | None, output: Path, arch_sp500: bool) -> None:
    """Write the headerless training CSV: 14 up/down features and the next day's label."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    frame = read_prices(prices, arch_sp500)
    windows = make_windows(going_up(frame["open"].to_numpy(), frame["close"].to_numpy()))
    output.parent.mkdir(parents=True, exist_ok=True)
    windows.to_csv(output, header=False, index=False)
    logger.info(
        "wrote %s: %d rows from %d days, %.1f%% up",
        output,
        len(windows),
        len(frame),
        100 * windows.iloc[:, -1].mean(),
    )


if __name__ == "__main__":
    main()
