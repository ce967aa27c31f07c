"""Destinations: their registry entry and their readiness checks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app

from ..extensions import db
from ..models import Destination
from ..readiness import FAIL, PASS, Check, NotReady, Readiness, fresh, skipped
from ..readiness.destination import REMOTE_CHECKS, SnowflakeTarget, check_destination
from ..resources import Resource, store_readiness
from .forms import DestinationForm


def target_of(destination: Destination) -> SnowflakeTarget:
    """Return what to check of a destination; raise ValueError if its passphrase is unreadable."""
    return SnowflakeTarget(
        account=destination.snowflake_account,
        user=destination.snowflake_user,
        database=destination.snowflake_database,
        schema=destination.snowflake_schema,
        role=destination.snowflake_role,
        warehouse=destination.snowflake_warehouse,
        private_key_path=destination.snowflake_private_key_path,
        passphrase=destination.snowflake_private_key_passphrase,
        host=destination.snowflake_host,
    )


def check_destination_now(destination: Destination, audited: bool = False) -> Readiness:
    """Check the destination now, store the result and return it; `audited`: an operator
    asked for it, and the audit log records the check with its result."""
    try:
        target = target_of(destination)
    except ValueError as exc:  # the passphrase was stored under another ENCRYPTION_KEY
        result = Readiness(
            [
                Check(
                    "private_key",
                    FAIL,
                    "Private key",
                    f"Passphrase: {exc}.",
                    "Enter the key's passphrase again on the destination's Edit page.",
                ),
                *skipped(
                    [("key_fingerprint", "Public key fingerprint"), *REMOTE_CHECKS],
                    "Skipped: the key cannot be opened.",
                ),
            ]
        )
    else:
        # No transaction stays open while Snowflake answers (up to the timeout), unless a
        # pipeline's save waits on this very check: its changes must not be written before.
        session = db.session
        if not (session.new or session.dirty or session.deleted):
            session.commit()
        timeout_s = float(current_app.config["WAL_MONITOR_TIMEOUT_SECONDS"])
        result = Readiness(check_destination(target, timeout_s))
    store_readiness(destination, result.to_dict(), audited)
    return result


class DestinationNotReady(NotReady):
    """A pipeline cannot start or refresh while its destination fails a readiness check."""

    error = "DestinationNotReadyError"

    def __init__(self, destination: Destination, readiness: Readiness) -> None:
        super().__init__("Destination", destination, "to load", readiness)


def fresh_readiness(destination: Destination) -> Readiness:
    """Return the destination's result, checked again first when it failed, is older than
    one monitor interval, or was never checked."""
    interval = timedelta(seconds=current_app.config["WAL_MONITOR_INTERVAL_SECONDS"])
    return fresh(destination.readiness, lambda: check_destination_now(destination), interval)


def require_ready(destination: Destination) -> None:
    """Raise DestinationNotReady when the destination (checked again if stale or failing)
    fails a check."""
    readiness = fresh_readiness(destination)
    if not readiness.ready:
        raise DestinationNotReady(destination, readiness)


def stored_fingerprint(stored: dict[str, Any] | None) -> str | None:
    """Return the key's fingerprint from a stored result, if its key could be read."""
    for check in (stored or {}).get("checks", []):
        if check["id"] == "key_fingerprint" and check["status"] == PASS:
            fingerprint = str(check["observed"]).split(" ", 1)[0]
            return fingerprint if fingerprint.startswith("SHA256:") else None
    return None


def _check_after_save(destination: Destination) -> None:
    """Check a destination as it is created or edited; a failing check never undoes the save."""
    check_destination_now(destination)


DESTINATIONS = Resource(
    model=Destination,
    form_class=DestinationForm,
    label="destination",
    plural="destinations",
    after_save=_check_after_save,
)
