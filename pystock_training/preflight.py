"""Is the tracking server there? One quick question before a run is started.

``mlflow run`` talks to the tracking server before any project code runs, and against an
unreachable one it retries with backoff for minutes and ends in a traceback; one that refuses
the credentials (basic auth) gets a traceback too. The Docker entrypoint and the cron script ask
first: ``python -m pystock_training.preflight`` exits 0 when the server answers and accepts the
credentials in MLFLOW_TRACKING_USERNAME/PASSWORD (or needs none), else 1 after one line naming
the URI (and the account, never the password), within about ``timeout`` seconds.
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


def check_credentials(uri: str, timeout: float = 15.0) -> str | None:
    """None when the server at ``uri`` takes the credentials MLflow would send, else why not."""
    if not uri.startswith(("http://", "https://")):
        return None
    from mlflow.environment_variables import MLFLOW_TRACKING_USERNAME
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    # The request MLflow itself makes first (the run's experiment), with MLflow's own credential
    # handling (username/password, token, TLS settings), but without its minutes of retries.
    try:
        response = http_request(
            get_default_host_creds(uri),
            "/api/2.0/mlflow/experiments/search",
            "GET",
            params={"max_results": 1},
            max_retries=0,
            timeout=min(10.0, timeout),
        )
    except Exception as exc:  # noqa: BLE001 - any failure here is the one line, not a traceback
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'}"
    if response.status_code == 401:
        user = MLFLOW_TRACKING_USERNAME.get()
        if not user:
            return "it requires a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        return (
            f"it refused the login of {user!r} (HTTP 401): check MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD"
        )
    if response.status_code >= 400 and response.status_code != 403:
        return f"HTTP {response.status_code} on experiments/search"
    return None


@click.command("preflight")
@click.option("--timeout", type=float, default=15.0, show_default=True, help="Seconds to keep trying.")
def main(timeout: float) -> None:
    """Exit 0 if the tracking server in MLFLOW_TRACKING_URI answers and lets us in, else 1 (one line)."""
    import mlflow

    from pystock_training.cli import configure_logging

    configure_logging()
    uri = mlflow.get_tracking_uri()
    reason = check_tracking_server(uri, timeout)
    if reason:
        logger.error("tracking server %s is unreachable (%s after %.0fs)", uri, reason, timeout)
        sys.exit(1)
    refused = check_credentials(uri, timeout)
    if refused:
        logger.error("tracking server %s: %s", uri, refused)
        sys.exit(1)


if __name__ == "__main__":
    main()
