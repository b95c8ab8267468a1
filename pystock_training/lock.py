"""A lock across hosts through the tracking server alone, around the gate's check-and-move.

MLflow has no atomic compare-and-set on aliases: two pipelines that both read ``@champion`` as
version 4 and both pass would both move it, and the second would replace the first without ever
being compared with it. Every tracking store, though, creates a registered model atomically and
refuses a second one of the same name (a unique key in SQL, a directory on a file store). That
is the lock: holding it means having created ``<model_name>.promotion-lock``; releasing it means
deleting it.

A holder that dies (kill -9, a lost host) cannot release. The lock carries a lease: a waiter
that sees the same holder's token for longer than the lease, timed by the waiter's own clock
(no clocks of two hosts are compared), breaks it. Two waiters that both see it expire are told
apart by a second unique name, ``<lock>.broken.<token>``: only the one that creates it breaks.
The section the lock guards is a handful of registry writes, far shorter than the lease; a
holder re-reads its token right before the alias moves and gives up if the lock was broken.
"""

from __future__ import annotations

import logging
import random
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pystock_training.errors import PystockError, first_line

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".promotion-lock"
TAG_TOKEN = "pystock.lock.token"
TAG_HOLDER = "pystock.lock.holder"
TAG_LEASE = "pystock.lock.lease_s"
# Far above the guarded section (seconds), so only a dead holder's lock expires.
LEASE_S = 120.0
WAIT_S = 600.0
POLL_S = 0.5
ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
NOT_FOUND = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})


class LockError(PystockError):
    """The lock could not be taken in time, or was lost while held."""


class RegistryLock:
    """A held lock: its name and token, and a check that it is still ours."""

    def __init__(self, client: MlflowClient, name: str, token: str) -> None:
        self.client = client
        self.name = name
        self.token = token

    def ensure_held(self) -> None:
        """Raise LockError unless the lock still carries this holder's token."""
        if _token_of(self.client, self.name) != self.token:
            raise LockError(f"lost {self.name}: its lease ran out and another run broke it")


def lock_name(model_name: str) -> str:
    """The registered model whose existence is the lock for ``model_name``'s aliases."""
    return f"{model_name}{LOCK_SUFFIX}"


@contextmanager
def registry_lock(
    model_name: str,
    *,
    holder: str,
    lease_s: float = LEASE_S,
    wait_s: float = WAIT_S,
    poll_s: float = POLL_S,
    client: MlflowClient | None = None,
) -> Iterator[RegistryLock]:
    """Hold ``model_name``'s promotion lock for the block; released on every exit path.

    Raises:
        LockError: Not acquired within ``wait_s`` seconds.
    """
    client = client or MlflowClient()
    name = lock_name(model_name)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    seen_token, seen_since = None, 0.0
    tags = {TAG_TOKEN: token, TAG_HOLDER: f"{holder} on {socket.gethostname()}", TAG_LEASE: str(lease_s)}
    while not _create(client, name, tags):
        current = _read(client, name)
        now = time.monotonic()
        if current is None:  # released between our create and our read: try again at once
            continue
        token_now, lease_now = current
        if token_now != seen_token:
            seen_token, seen_since = token_now, now
        elif now - seen_since > lease_now:
            _break(client, name, token_now)
            continue
        if now > deadline:
            raise LockError(
                f"could not take {name} within {wait_s:g}s: another pipeline holds it ({token_now[:8]})"
            )
        # Jitter: waiters that woke together do not all retry in the same millisecond.
        time.sleep(poll_s * random.uniform(0.5, 1.5))
    logger.info("took %s", name)
    try:
        yield RegistryLock(client, name, token)
    finally:
        _release(client, name, token)


def _create(client: MlflowClient, name: str, tags: dict[str, str]) -> bool:
    try:
        client.create_registered_model(
            name, tags=tags, description="Held while a pystock-training run moves @champion; do not edit."
        )
    except MlflowException as exc:
        # "Does not exist" too: on a name clash the store looks the existing model up to word
        # its error, and finds none when its holder released it in between.
        if exc.error_code == ALREADY_EXISTS or exc.error_code in NOT_FOUND:
            return False
        raise LockError(f"cannot take {name}: {first_line(exc)}") from exc
    return True


def _read(client: MlflowClient, name: str) -> tuple[str, float] | None:
    """The holder's token and lease, or None when the lock does not exist."""
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND:
            return None
        raise
    try:
        lease = float(tags.get(TAG_LEASE, LEASE_S))
    except ValueError:
        lease = LEASE_S
    # A lock seen before its tags are readable has no token yet: it is live, not stale.
    return tags.get(TAG_TOKEN, "?"), lease


def _token_of(client: MlflowClient, name: str) -> str | None:
    current = _read(client, name)
    return current[0] if current else None


def _break(client: MlflowClient, name: str, token: str) -> None:
    """Delete an expired lock, unless another waiter is already doing so or it changed hands."""
    tombstone = f"{name}.broken.{token}"
    if not _create(client, tombstone, {TAG_TOKEN: token}):
        return
    try:
        if _token_of(client, name) == token:
            logger.warning("breaking %s: holder %s kept it past its lease", name, token[:8])
            _delete(client, name)
    finally:
        _delete(client, tombstone)


def _release(client: MlflowClient, name: str, token: str) -> None:
    try:
        if _token_of(client, name) == token:
            _delete(client, name)
            logger.info("released %s", name)
        else:
            logger.warning("%s was broken while held; nothing to release", name)
    except MlflowException as exc:
        # Whatever went wrong, the lease frees it for the next run.
        logger.warning("could not release %s (%s); it expires after its lease", name, first_line(exc))


def _delete(client: MlflowClient, name: str) -> None:
    try:
        client.delete_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in NOT_FOUND:
            raise
