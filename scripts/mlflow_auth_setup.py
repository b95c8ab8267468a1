"""The tracking server's accounts and permissions, from the environment, through MLflow's auth API.

``scripts/mlflow_server.sh`` runs this against the server it just started (basic-auth app), as
the admin, on every start, so the environment is the one source of truth: a missing account is
created, an existing one gets the password the environment gives (rotating a password is
changing the variable and restarting), and the grants are set to:

* trainer: EDIT on the experiment and on the registered model (runs, logged models, versions,
  tags, aliases); the promotion lock's models it creates itself, which makes it their manager;
* reader: READ on both (load ``models:/<model>@champion``, read runs), nothing it can change.

Every other account gets the server's ``default_permission`` (NO_PERMISSIONS as
mlflow_server.sh configures it). The experiment and the registered model are created here when
missing, by the admin, so that no other account can claim them first.

Environment (passwords have no defaults; the admin's is also what the server bootstraps from):
    MLFLOW_TRACKING_URI          the server, e.g. http://127.0.0.1:5000
    MLFLOW_AUTH_ADMIN_USERNAME   default admin
    MLFLOW_AUTH_ADMIN_PASSWORD   required
    PYSTOCK_TRAINER_USERNAME     default pystock-trainer
    PYSTOCK_TRAINER_PASSWORD     required
    PYSTOCK_READER_USERNAME      default pystock-reader
    PYSTOCK_READER_PASSWORD      required
    PYSTOCK_EXPERIMENT_NAME      the experiment the trainer logs to (default Default)
    PYSTOCK_MODEL_NAME           the registered model (default training-model-psystock)
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
import requests

if TYPE_CHECKING:
    from mlflow.server.auth.client import AuthServiceClient

logger = logging.getLogger("mlflow_auth_setup")

DEFAULT_MODEL_NAME = "training-model-psystock"
TRAINER_PERMISSION = "EDIT"
READER_PERMISSION = "READ"


class SetupError(Exception):
    """A setting or a server answer that stops the setup; its message is the one line to print."""


@dataclass(frozen=True)
class Account:
    variable: str  # the password's environment variable, named in errors (never the password)
    username: str
    password: str
    permission: str


def required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SetupError(f"{name} is not set")
    return value


def accounts_from_env() -> list[Account]:
    return [
        Account(
            "PYSTOCK_TRAINER_PASSWORD",
            os.environ.get("PYSTOCK_TRAINER_USERNAME") or "pystock-trainer",
            required("PYSTOCK_TRAINER_PASSWORD"),
            TRAINER_PERMISSION,
        ),
        Account(
            "PYSTOCK_READER_PASSWORD",
            os.environ.get("PYSTOCK_READER_USERNAME") or "pystock-reader",
            required("PYSTOCK_READER_PASSWORD"),
            READER_PERMISSION,
        ),
    ]


def wait_for_server(uri: str, timeout: float, pid: int | None) -> None:
    """Return once ``uri``/health answers; fail if ``pid`` (the server) exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                raise SetupError(f"the tracking server (pid {pid}) exited before it answered") from None
        try:
            if requests.get(f"{uri}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SetupError(f"the tracking server {uri} did not answer /health within {timeout:.0f}s")


def ensure_account(client: AuthServiceClient, account: Account) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_user(account.username)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_user(account.username, account.password)
        except MlflowException as create_exc:
            raise SetupError(f"{account.variable}: {create_exc.message}") from None
        logger.info("created account %s", account.username)
        return
    try:
        client.update_user_password(account.username, account.password)
    except MlflowException as exc:
        raise SetupError(f"{account.variable}: {exc.message}") from None
    # An account this script manages is never an admin, whatever was done to it by hand.
    client.update_user_admin(account.username, False)


def grant(
    client: AuthServiceClient, username: str, resource_type: str, resource_id: str, permission: str
) -> None:
    """Make ``username``'s permission on the resource exactly ``permission``."""
    from mlflow.exceptions import MlflowException

    try:
        client.grant_user_permission(username, resource_type, resource_id, permission)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        # A grant exists (from an earlier start, or set by hand): replace it if it differs.
        current = client.get_user_permission(username, resource_type, resource_id)
        if getattr(current, "permission", None) != permission:
            client.revoke_user_permission(username, resource_type, resource_id)
            client.grant_user_permission(username, resource_type, resource_id, permission)


def setup(uri: str) -> None:
    """Accounts, experiment, registered model and grants on the server at ``uri``."""
    # The auth client and MlflowClient take their credentials from these variables: the admin's,
    # in this process only.
    os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = required("MLFLOW_AUTH_ADMIN_PASSWORD")
    accounts = accounts_from_env()
    experiment_name = os.environ.get("PYSTOCK_EXPERIMENT_NAME") or "Default"
    model_name = os.environ.get("PYSTOCK_MODEL_NAME") or DEFAULT_MODEL_NAME

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    auth: AuthServiceClient = get_app_client("basic-auth", tracking_uri=uri)
    client = MlflowClient(uri)
    try:
        for account in accounts:
            ensure_account(auth, account)
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
        try:
            client.get_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            client.create_registered_model(model_name)
            logger.info("created registered model %s", model_name)
        for account in accounts:
            grant(auth, account.username, "experiment", experiment_id, account.permission)
            grant(auth, account.username, "registered_model", model_name, account.permission)
    except MlflowException as exc:
        if exc.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise SetupError(
                f"the server refused the admin {os.environ['MLFLOW_TRACKING_USERNAME']!r}: "
                "MLFLOW_AUTH_ADMIN_PASSWORD is not the admin's password (it bootstraps only the first start)"
            ) from None
        raise SetupError(f"{type(exc).__name__}: {exc.message.splitlines()[0]}") from None
    logger.info(
        "auth ready: %s may write, %s may read experiment %r (id %s) and model %r",
        accounts[0].username,
        accounts[1].username,
        experiment_name,
        experiment_id,
        model_name,
    )


@click.command()
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for /health.")
@click.option("--server-pid", type=int, default=None, help="Stop waiting if this process (the server) exits.")
def main(timeout: float, server_pid: int | None) -> None:
    """Create or update the accounts and grants on the server in MLFLOW_TRACKING_URI."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uri = (os.environ.get("MLFLOW_TRACKING_URI") or "").rstrip("/")
    try:
        if not uri.startswith(("http://", "https://")):
            raise SetupError(f"MLFLOW_TRACKING_URI must be the server's http(s):// address, not {uri!r}")
        wait_for_server(uri, timeout, server_pid)
        setup(uri)
    except SetupError as exc:
        logger.error("auth setup failed: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
