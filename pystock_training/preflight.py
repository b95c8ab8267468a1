"""Is the tracking server there? One quick question before a run is started.

``mlflow run`` talks to the tracking server before any project code runs, and against an
unreachable one it retries with backoff for minutes and ends in a traceback. The Docker
entrypoint and the cron script ask first: ``python -m pystock_training.preflight`` exits 0 when
the server answers, else 1 after one line naming the URI, within about ``timeout`` seconds.
"""

from __future__ import annotations

import logging
import sys
import time

import click
import requests

logger = logging.getLogger("pystock_training.preflight")  # not __main__ under python -m


def check_tracking_server(uri: str, timeout: float = 15.0) -> str | None:
    """None when ``uri`` answers (or is not a server), else the reason it does not."""
    if not uri.startswith(("http://", "https://")):
        return None  # a local store (sqlite, file) needs no server
    deadline = time.monotonic() + timeout
    reason = "no answer"
    while time.monotonic() < deadline:
        try:
            # /health answers without credentials; a 401/403 still proves the server is there.
            response = requests.get(f"{uri.rstrip('/')}/health", timeout=min(5.0, timeout))
            if response.status_code < 500:
                return None
            reason = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            reason = type(exc).__name__ + (": connection refused" if "refused" in str(exc).lower() else "")
        time.sleep(1.0)
    return reason


@click.command("preflight")
@click.option("--timeout", type=float, default=15.0, show_default=True, help="Seconds to keep trying.")
def main(timeout: float) -> None:
    """Exit 0 if the tracking server in MLFLOW_TRACKING_URI answers, 1 (one line) if not."""
    import mlflow

    from pystock_training.cli import configure_logging

    configure_logging()
    uri = mlflow.get_tracking_uri()
    reason = check_tracking_server(uri, timeout)
    if reason:
        logger.error("tracking server %s is unreachable (%s after %.0fs)", uri, reason, timeout)
        sys.exit(1)


if __name__ == "__main__":
    main()
