"""Shared pieces of the step CLIs: logging set-up, click options, and the error boundary."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pystock_training import config
from pystock_training.errors import PystockError

logger = logging.getLogger("pystock_training")

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1

# Options shared by main and train_model, with the defaults from config (one place).
TRAINING_OPTIONS = (
    click.option(
        "--data-file", default=config.DATA_FILE, show_default=True, help="Training table (CSV or Parquet)."
    ),
    click.option("--split", type=click.Choice(config.SPLITS), default=config.SPLIT, show_default=True),
    click.option(
        "--test-size",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=config.TEST_SIZE,
        show_default=True,
    ),
    click.option("--random-state", type=int, default=config.RANDOM_STATE, show_default=True),
    click.option(
        "--threshold",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=config.THRESHOLD,
        show_default=True,
    ),
    click.option(
        "--num-boost-round", type=click.IntRange(min=1), default=config.NUM_BOOST_ROUND, show_default=True
    ),
    click.option("--max-depth", type=click.IntRange(min=1), default=config.MAX_DEPTH, show_default=True),
    click.option(
        "--learning-rate",
        type=click.FloatRange(0, 1, min_open=True),
        default=config.LEARNING_RATE,
        show_default=True,
    ),
    click.option(
        "--early-stopping-rounds",
        type=click.IntRange(min=0),
        default=config.EARLY_STOPPING_ROUNDS,
        show_default=True,
        help="0 turns early stopping off.",
    ),
)


def training_options(command: F) -> F:
    """Add the shared training options to a click command."""
    for option in reversed(TRAINING_OPTIONS):
        command = option(command)
    return command


def configure_logging() -> None:
    """Timestamped lines on stderr; called only from a script's ``__main__``."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def run_cli(step: str, func: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a step and turn its failure into one clear line and a non-zero exit.

    Expected failures (bad data, bad parameters, a failed step) print only their message;
    anything else is a bug, so its traceback is logged too, but the last line still says what
    failed.
    """
    try:
        return func(**kwargs)
    except PystockError as exc:
        logger.error("%s failed: %s", step, exc)
    except Exception as exc:
        logger.exception("unexpected error")
        logger.error("%s failed: %s: %s", step, type(exc).__name__, exc)
    sys.exit(EXIT_ERROR)
