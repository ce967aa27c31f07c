"""Deliver the outbox: signed webhooks, and every other service through Apprise.

Delivery is at least once, with an id to drop repeats by. Any process may deliver: a
notification is claimed with a lease before it is sent, so two processes never send the same
one at once, and one that dies mid-send leaves it to be claimed again when the lease runs out:
the receiver then gets it twice, with the same `delivery_id` (and, for a webhook, the same
X-Rosetta-Delivery header). Exactly once cannot be promised across an HTTP call. What a send
did is kept even while the metadata database is away: the commit is tried again, then the
outcome is held in memory and written once the database is back, before anything is claimed,
so a send is repeated only when the process that made it died.

Each channel is sent on its own thread: one that hangs holds up neither the sampling round nor
the other channels. No channel follows a redirect (a send is delivered on a 2xx from the
target itself), and none connects where targets.py forbids. The threads, and what they are
sending, are the app's DeliveryPool: made by create_app (init_app), kept in app.extensions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from flask import Flask, current_app
from sqlalchemy import func, or_, select, update
from werkzeug.local import LocalProxy

from ...errors import DATABASE_UNAVAILABLE, NotFound
from ...extensions import db
from ...models import Alert, Channel, Delivery, Notification
from ...timeutil import as_utc, utcnow
from . import targets

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 5
# Tries in all, and the wait before each retry: 30 s, 2 min, 10 min, 30 min.
MAX_ATTEMPTS = 5
RETRY_SECONDS = (30, 120, 600, 1800)
# Longer than any one send can take: a claim older than this was left by a dead process.
LEASE_SECONDS = 120
BATCH = 100
SIGNATURE_HEADER = "X-Rosetta-Signature"
# The notification's delivery_id, the same on every try: what a receiver drops repeats by.
DELIVERY_HEADER = "X-Rosetta-Delivery"
# Waits before storing a send's outcome again while the metadata database is away; after
# them the outcome is held in memory until it is back.
RECORD_RETRY_SECONDS = (0.5, 2.0)

WORKERS = 8
# Notifications sent to one channel at the same time, at most.
PER_CHANNEL = 2
EXTENSION = "rosetta_delivery"


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: ok, the webhook's HTTP status, or why it failed."""

    ok: bool
    status_code: int | None = None
    error: str | None = None


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the signature header's value: t=<unix seconds>,v1=<HMAC-SHA256 of "t.body">."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def _where(url: str) -> str:
    """Name a URL's host and port, never its path or credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def send_webhook(url: str, secret: str | None, payload: dict[str, Any]) -> Outcome:
    """POST the payload as JSON, signed, with a 5 s timeout; 2xx is delivered."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "Rosetta-Alerts/1"}
    if payload.get("delivery_id"):
        headers[DELIVERY_HEADER] = str(payload["delivery_id"])
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, int(time.time()), body)
    try:
        # Only the status is read (the body never is), each step within the timeout.
        # A redirect is not delivery: a 3xx from the target is the failure it is.
        # No proxy from the environment: the target checked is the one connected to.
        with requests.Session() as session:
            session.trust_env = False
            with session.post(
                url,
                data=body,
                headers=headers,
                timeout=WEBHOOK_TIMEOUT_SECONDS,
                allow_redirects=False,
                stream=True,
            ) as response:
                status = response.status_code
    except requests.Timeout:
        return Outcome(
            False, error=f"no answer from {_where(url)} within {WEBHOOK_TIMEOUT_SECONDS} s"
        )
    except requests.ConnectionError:
        return Outcome(False, error=f"cannot connect to {_where(url)}")
    except requests.RequestException as exc:
        return Outcome(False, error=f"{type(exc).__name__} sending to {_where(url)}")
    ok = 200 <= status < 300
    return Outcome(ok, status, None if ok else f"HTTP {status}")


def _title(payload: dict[str, Any]) -> str:
    alert = payload["alert"]
    what = {"firing": "FIRING", "resolved": "RESOLVED", "repeat": "STILL FIRING", "test": "TEST"}
    return (
        f"[{what[payload['event']]}] Rosetta {alert['severity']}: {alert['rule']} on "
        f"{alert['source_name']}"
    )


def _said(payload: dict[str, Any]) -> str:
    """The notification's text: what resolved the alert, for a `resolved`; else its message."""
    alert = payload["alert"]
    if payload["event"] == "resolved" and alert.get("resolved_message"):
        return str(alert["resolved_message"])
    return str(alert["message"])


def send_apprise(url: str, payload: dict[str, Any]) -> Outcome:
    """Send the alert through Apprise: a title, the message, a link and the delivery id;
    a redirect is not followed."""
    import apprise  # 0.2 s to import: loaded when a channel first needs it, not at start-up

    # Apprise follows redirects unless told not to, and a 302 then reads as delivered though
    # the target itself sent nothing: turned off for every service, whatever the URL says.
    asset = apprise.AppriseAsset(http_redirects=False)
    plugin = apprise.Apprise.instantiate(url, asset=asset)
    if plugin is None:
        return Outcome(False, error="Apprise cannot read this channel's URL")
    plugin.redirects = False
    notifier = apprise.Apprise(asset=asset)
    notifier.add(plugin)
    event, alert = payload["event"], payload["alert"]
    if event == "resolved":
        kind = apprise.NotifyType.SUCCESS
    elif event == "test":
        kind = apprise.NotifyType.INFO
    else:
        kind = (
            apprise.NotifyType.FAILURE
            if alert["severity"] == "critical"
            else apprise.NotifyType.WARNING
        )
    body = f"{_said(payload)}\n\n{payload['url']}"
    if payload.get("delivery_id"):
        body += f"\n\ndelivery_id: {payload['delivery_id']}"
    # The warnings of this send alone, wherever Apprise ran it (a thread of its own).
    result = notifier.notify(body=body, title=_title(payload), notify_type=kind)
    if result:
        return Outcome(True)
    warnings = [
        entry.message for entry in result.logs() if entry.level in {"WARNING", "ERROR", "CRITICAL"}
    ]
    reason = warnings[-1] if warnings else "the service refused the notification"
    return Outcome(False, error=reason[:500])


def send(channel: Channel, payload: dict[str, Any]) -> Outcome:
    """Send one payload to one channel, never where targets.py forbids; never raise."""
    allow_private = bool(current_app.config.get("ALERT_PRIVATE_TARGETS", True))
    refused: list[str] = []
    try:
        url = channel.url
        as_written = targets.url_refusal(channel.type, url, allow_private)
        if as_written is not None:  # saved before such URLs were refused, or the setting changed
            host, reason = as_written
            return Outcome(False, error=f"refused to send to {host}: {reason}")
        with targets.guarded(allow_private) as guard:
            refused = guard.refused
            if channel.type == "webhook":
                outcome = send_webhook(url, channel.secret, payload)
            else:
                outcome = send_apprise(url, payload)
    except Exception as exc:  # a bug or a broken secret must not stop the other channels
        log.warning("delivery to channel %s failed: %s", channel.name, type(exc).__name__)
        return Outcome(
            False, error=str(exc)[:500] if isinstance(exc, ValueError) else type(exc).__name__
        )
    if not outcome.ok and refused:  # say why it could not connect, not only that
        return Outcome(False, outcome.status_code, refused[0][:500])
    return outcome


def outgoing(notification: Notification) -> dict[str, Any]:
    """Return what is sent for a notification: its payload and its delivery_id."""
    return {"delivery_id": notification.delivery_id, **notification.payload}


def record(
    notification: Notification,
    outcome: Outcome,
    started: datetime,
    duration_s: float,
    token: str | None = None,
) -> Delivery:
    """Write the attempt to the channel's delivery log and settle the notification."""
    notification.attempts += 1
    if token is None or notification.claim_token == token:
        # A claim another process took since (an outcome held in memory, written late) is
        # its own to settle.
        notification.claimed_until = notification.claim_token = None
    if notification.delivered_at is not None:
        pass  # another try was delivered already: the log gains this one, nothing else changes
    elif outcome.ok:
        notification.delivered_at = started
    elif notification.attempts >= MAX_ATTEMPTS or notification.event == "test":
        notification.failed_at = started
    else:
        wait_s = RETRY_SECONDS[min(notification.attempts, len(RETRY_SECONDS)) - 1]
        notification.next_attempt_at = started + timedelta(seconds=wait_s)
    entry = Delivery(
        channel_id=notification.channel_id,
        notification_id=notification.id,
        event=notification.event,
        attempted_at=started,
        ok=outcome.ok,
        status_code=outcome.status_code,
        error=outcome.error,
        duration_ms=int(duration_s * 1000),
    )
    db.session.add(entry)
    return entry


@dataclass(frozen=True)
class Attempt:
    """One send and what came of it, to be written to the delivery log."""

    notification_id: int
    # The claim it was sent under (None for a test): a later claim is left to its holder.
    token: str | None
    outcome: Outcome
    started: datetime
    duration_s: float


class DeliveryPool:
    """One app's delivery threads and their bookkeeping in this process."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.workers = workers
        # Threads start on the first send, so an app that never delivers starts none.
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="alert-delivery")
        self.kick_lock = threading.Lock()
        # The deliveries started and not finished, and the channel of each.
        self.sending: dict[Future[bool], int] = {}
        self.held_lock = threading.Lock()
        # The outcomes of sends that the metadata database was away to store, by
        # notification: written by the next kick before it claims anything, and meanwhile
        # never claimed (so never sent) again by this process.
        self.held: dict[int, Attempt] = {}

    def done(self, future: Future[bool]) -> None:
        """Forget a finished delivery."""
        with self.kick_lock:
            self.sending.pop(future, None)


def init_app(app: Flask) -> None:
    """Give the app its delivery pool."""
    app.extensions[EXTENSION] = DeliveryPool()


def pool() -> DeliveryPool:
    """Return the current app's delivery pool."""
    found: DeliveryPool = current_app.extensions[EXTENSION]
    return found


def _app() -> Flask:
    return cast("LocalProxy[Flask]", current_app)._get_current_object()


def _rollback() -> None:
    try:
        db.session.rollback()
    except Exception:  # the connection is gone: nothing is left to roll back
        log.debug("rolling back after the metadata database went away failed", exc_info=True)


def _write(attempt: Attempt) -> Delivery | None:
    """Store an attempt, once however often it is tried; return its log entry, or None when
    the notification is gone (its channel was deleted meanwhile)."""
    notification = db.session.get(Notification, attempt.notification_id)
    if notification is None:
        db.session.rollback()
        return None
    # A commit whose answer was lost may have been stored after all.
    stored = db.session.scalar(
        select(Delivery).where(
            Delivery.notification_id == attempt.notification_id,
            Delivery.attempted_at == attempt.started,
        )
    )
    if stored is not None:
        db.session.rollback()
        return stored
    outcome, started, duration_s = attempt.outcome, attempt.started, attempt.duration_s
    entry = record(notification, outcome, started, duration_s, attempt.token)
    db.session.commit()
    return entry


def _settle(attempt: Attempt, reraise: bool = False) -> Delivery | None:
    """Store an attempt, trying again while the metadata database is away, and hold it in
    memory if it stays away; return its log entry, or None when held (or gone). With
    `reraise`, the last error is raised once it is held."""
    for wait_s in (*RECORD_RETRY_SECONDS, None):
        try:
            return _write(attempt)
        except DATABASE_UNAVAILABLE:
            _rollback()
            if wait_s is None:
                # A failed send is tried again after its lease anyway; a delivered one must
                # not be: hold it until it can be stored.
                if attempt.outcome.ok:
                    _hold(attempt)
                if reraise:
                    raise
                return None
            time.sleep(wait_s)  # a restart or failover takes a moment
    return None


def _hold(attempt: Attempt) -> None:
    sends = pool()
    with sends.held_lock:
        first = not sends.held
        sends.held[attempt.notification_id] = attempt
    if first:
        log.warning(
            "alert delivery: the metadata database is away; what each send did is held in "
            "memory and stored when it is back"
        )


def held() -> list[Attempt]:
    """Return the attempts this app's process holds in memory, not yet stored."""
    sends = pool()
    with sends.held_lock:
        return list(sends.held.values())


def write_held() -> int:
    """Store the attempts held while the metadata database was away; return how many.
    Raise if it is still away: the next kick tries again."""
    sends = pool()
    written = 0
    for attempt in held():
        try:
            _write(attempt)
        except DATABASE_UNAVAILABLE:
            _rollback()
            raise
        except Exception:  # never stuck on one: it is sent again when its lease runs out
            _rollback()
            log.exception(
                "storing what alert notification %d's send did failed; it may be sent again",
                attempt.notification_id,
            )
        with sends.held_lock:
            sends.held.pop(attempt.notification_id, None)
        written += 1
    if written:
        log.warning(
            "alert delivery: stored what %d send(s) did while the metadata database was away",
            written,
        )
    return written


def deliver(notification_id: int, token: str) -> bool:
    """Send one notification this process claimed, if it still holds the claim, and record
    how it went; return whether it was delivered."""
    notification = db.session.get(Notification, notification_id)
    now = utcnow()
    if (
        notification is None
        or notification.claim_token != token
        or notification.claimed_until is None
        or as_utc(notification.claimed_until) <= now
        or notification.delivered_at is not None
    ):
        db.session.rollback()
        return False  # the lease ran out first: another process may have taken it
    channel = db.session.get(Channel, notification.channel_id)
    if channel is None:
        db.session.rollback()
        return False
    payload = outgoing(notification)
    tries = notification.attempts + 1
    # Read as it is now: from the send on, nothing needs the database, which may go away.
    db.session.expunge(channel)
    db.session.commit()  # no transaction stays open while the channel is called
    started = utcnow()
    clock = time.monotonic()
    outcome = send(channel, payload)
    _settle(Attempt(notification_id, token, outcome, started, time.monotonic() - clock))
    if not outcome.ok:
        log.warning(
            "alert notification %d to channel %s failed (try %d): %s",
            notification_id,
            channel.name,
            tries,
            outcome.error,
        )
    return outcome.ok


def claim_due(
    now: datetime, room: int = BATCH, busy: dict[int, int] | None = None
) -> list[tuple[int, int, str]]:
    """Claim the notifications due now, each by one process alone: at most `room` of them,
    at most PER_CHANNEL a channel counting the `busy` ones, and for an alert and a channel
    only the oldest still pending (a `resolved` never overtakes its `firing`). Return each
    claimed one's id, channel and claim token."""
    busy = dict(busy or {})
    pending = (
        Notification.delivered_at.is_(None),
        Notification.failed_at.is_(None),
    )
    due = db.session.execute(
        select(Notification.id, Notification.channel_id, Notification.alert_id)
        .where(
            *pending,
            Notification.next_attempt_at <= now,
            or_(Notification.claimed_until.is_(None), Notification.claimed_until < now),
        )
        .order_by(Notification.id)
        .limit(BATCH)
    ).all()
    alert_ids = {row.alert_id for row in due if row.alert_id is not None}
    first: dict[tuple[int | None, int], int] = {}
    if alert_ids:
        for alert_id, channel_id, oldest in db.session.execute(
            select(Notification.alert_id, Notification.channel_id, func.min(Notification.id))
            .where(*pending, Notification.alert_id.in_(alert_ids))
            .group_by(Notification.alert_id, Notification.channel_id)
        ):
            first[(alert_id, channel_id)] = oldest
    # Sent already, with what came of it held in memory until the database takes it.
    sent = {attempt.notification_id for attempt in held()}
    claimed: list[tuple[int, int, str]] = []
    for row in due:
        if len(claimed) >= room or busy.get(row.channel_id, 0) >= PER_CHANNEL:
            continue
        if row.id in sent:  # (and what waits behind it for the same alert, just below)
            continue
        if row.alert_id is not None and first.get((row.alert_id, row.channel_id)) != row.id:
            continue  # an older one for the same alert and channel goes first
        token = secrets.token_hex(16)
        # Only one UPDATE can move an unclaimed (or expired) row to claimed.
        result = db.session.execute(
            update(Notification)
            .where(
                Notification.id == row.id,
                *pending,
                or_(Notification.claimed_until.is_(None), Notification.claimed_until < now),
            )
            .values(claimed_until=now + timedelta(seconds=LEASE_SECONDS), claim_token=token)
        )
        db.session.commit()
        if getattr(result, "rowcount", 0) == 1:
            claimed.append((row.id, row.channel_id, token))
            busy[row.channel_id] = busy.get(row.channel_id, 0) + 1
    db.session.rollback()
    return claimed


def _deliver_in_context(app: Flask, notification_id: int, token: str) -> bool:
    with app.app_context():
        try:
            return deliver(notification_id, token)
        except DATABASE_UNAVAILABLE as exc:  # before the send: it is claimed again later
            log.warning(
                "alert notification %d not sent: the metadata database is away (%s)",
                notification_id,
                type(getattr(exc, "orig", None) or exc).__name__,
            )
            _rollback()
            return False
        except Exception:
            log.exception("delivering alert notification %d failed", notification_id)
            _rollback()
            return False


def kick(now: datetime | None = None) -> list[Future[bool]]:
    """Start delivering what is due, each on a thread, without waiting: no more than there
    are free threads, and no more than PER_CHANNEL at once to one channel, so a channel that
    hangs holds up neither the others nor the notifications claimed after it. First store
    what sends did while the metadata database was away."""
    app = _app()
    sends = pool()
    with sends.kick_lock:
        write_held()
        room = sends.workers - len(sends.sending)
        if room <= 0:
            return []
        busy: dict[int, int] = {}
        for channel_id in sends.sending.values():
            busy[channel_id] = busy.get(channel_id, 0) + 1
        claimed = claim_due(now or utcnow(), room, busy)
        futures = []
        for notification_id, channel_id, token in claimed:
            future = sends.executor.submit(_deliver_in_context, app, notification_id, token)
            sends.sending[future] = channel_id
            futures.append(future)
    for future in futures:
        future.add_done_callback(sends.done)
    return futures


def deliver_due(timeout_s: float = WEBHOOK_TIMEOUT_SECONDS * 3) -> int:
    """Deliver what is due, and wait for it and for what this process is still sending (the
    CLI, before it exits); return how many were delivered."""
    sends = pool()
    futures = set(kick())
    with sends.kick_lock:
        futures |= set(sends.sending)
    done, _ = wait(futures, timeout=timeout_s)
    if held():
        try:
            with sends.kick_lock:
                write_held()
        except DATABASE_UNAVAILABLE:
            _rollback()
            log.warning(
                "alert delivery: the metadata database is still away; %d notification(s) "
                "sent now are sent again after their lease",
                len(held()),
            )
    return sum(1 for future in done if future.result())


def send_test(channel: Channel) -> Delivery:
    """Send a test notification to a channel now, and return its delivery log entry."""
    now = utcnow()
    # A made-up alert (never stored), shaped as every real one is.
    alert = Alert(
        id=0,
        rule="retained_wal",
        severity="warning",
        state="firing",
        source_name="rosetta-test",
        message=f"A test notification from Rosetta to channel '{channel.name}': it works.",
        started_at=now,
    ).to_dict()
    base = current_app.config["PUBLIC_URL"].rstrip("/")
    channel_id = channel.id
    notification = Notification(
        channel_id=channel_id,
        event="test",
        payload={"event": "test", "alert": alert, "url": f"{base}/alerts"},
        next_attempt_at=now,
        claimed_until=now + timedelta(seconds=LEASE_SECONDS),
    )
    db.session.add(notification)
    db.session.commit()
    notification_id, payload = notification.id, outgoing(notification)
    clock = time.monotonic()
    outcome = send(channel, payload)
    # Held in memory if the database went away meanwhile: the request answers 503.
    entry = _settle(
        Attempt(notification_id, None, outcome, now, time.monotonic() - clock), reraise=True
    )
    if entry is None:  # the channel was deleted while it was sent to
        raise NotFound("Channel", channel_id)
    return entry
