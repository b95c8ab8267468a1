"""Shared pieces of the step CLIs: logging set-up, click options, and the error boundary."""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from pystock_training import config
from pystock_training.errors import PystockError
from pystock_training.params import REQUIRED, EntryPoint, parameters
from pystock_training.tracking import Terminated, die_with_parent, raise_on_sigterm

logger = logging.getLogger("pystock_training")

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_USAGE = 2
# 128 + the signal, what a shell reports for a process killed by it: SIGTERM, SIGINT.
EXIT_TERMINATED = 143
EXIT_INTERRUPTED = 130


class WholeNumber(click.ParamType):
    """An integer parameter that also takes integral floats (``1e9``, ``300.0``), but not ``2.5``.

    MLflow has no integer parameter type, so MLproject declares these as floats: ``mlflow run``
    accepts ``-P num_boost_round=1e9`` and passes the text on as it was typed.
    """

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not number.is_integer():
            self.fail(f"{value} is not a whole number", param, ctx)
        return int(number)


WHOLE_NUMBER = WholeNumber()

# The click type of each declared type. Range checks live in the package (params.check_params),
# so a bad value fails the run with the same one-line error whether it came from the CLI or a
# direct call.
CLICK_TYPES: dict[type, click.ParamType] = {
    str: click.STRING,
    int: WHOLE_NUMBER,
    float: click.FLOAT,
    bool: click.BOOL,
}


def parameter_options(entry_point: EntryPoint) -> Callable[[F], F]:
    """Add one click option per parameter ``entry_point`` declares (params.PARAMETERS)."""

    def add(command: F) -> F:
        for param in reversed(parameters(entry_point)):
            default = param.default_for(entry_point)
            required = default is REQUIRED
            command = click.option(
                param.flag,
                type=CLICK_TYPES[param.type],
                required=required,
                default=None if required else default,
                show_default=not required and default != "",
                help=param.help,
            )(command)
        return command

    return add


class StepCommand(click.Command):
    """A click command whose bad options give one error line, not click's usage block."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.ClickException as exc:
            configure_logging()
            _fail(self.name or "step", f"{exc.format_message()} (see --help)", EXIT_USAGE)
        except click.Abort:
            sys.exit(EXIT_ERROR)


def configure_logging() -> None:
    """Timestamped lines on stderr; called only from a script's ``__main__`` path."""
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
    raise_on_sigterm()
    # What is loaded by now (MLflow, SQLAlchemy, pandas: millions of objects) lives until exit.
    # Frozen, it is left out of the collections during the step and of those the interpreter
    # runs as it shuts down, which otherwise take about a second per process. Collection was
    # off while it loaded (pystock_training.startup) and is on from here.
    gc.freeze()
    gc.enable()
    try:
        die_with_parent()
        return func(**kwargs)
    except KeyboardInterrupt as exc:
        code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
        _fail(step, str(exc) or "interrupted", code)
    except PystockError as exc:
        _fail(step, str(exc), EXIT_ERROR)
    except Exception as exc:
        logger.exception("unexpected error")
        _fail(step, f"{type(exc).__name__}: {exc}", EXIT_ERROR)
    finally:
        gc.freeze()


def _fail(step: str, reason: str, code: int) -> NoReturn:
    logger.error("%s failed: %s", step, reason)
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id and code == EXIT_USAGE:
        # Under `mlflow run` the run exists before the options are parsed; leave the reason
        # on it so the driver (and the UI) can show it. Other failures tagged it already.
        _tag_error(run_id, reason)
    if run_id and code in (EXIT_TERMINATED, EXIT_INTERRUPTED):
        # Stopped before the step opened its run (its parent died during start-up): end the
        # run `mlflow run` created, which nothing else would.
        _end_killed(run_id, reason)
    sys.exit(code)


def _end_killed(run_id: str, reason: str) -> None:
    from mlflow import MlflowClient

    try:
        client = MlflowClient()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, config.TAG_ERROR, reason[:5000])
            client.set_terminated(run_id, "KILLED")
    except Exception:  # noqa: BLE001 - the error line above is what matters
        logger.warning("could not end run %s", run_id)


def _tag_error(run_id: str, reason: str) -> None:
    from mlflow import MlflowClient

    try:
        MlflowClient().set_tag(run_id, config.TAG_ERROR, reason[:5000])
    except Exception:  # noqa: BLE001 - the error line above is what matters
        logger.warning("could not record the error on run %s", run_id)
