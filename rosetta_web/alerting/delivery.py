"""Deliver the outbox: signed webhooks, and every other service through Apprise.

Any process may deliver: a notification is claimed with a lease before it is sent, so two
processes never send the same one, and one that dies mid-send leaves it to be claimed again
when the lease runs out. Each channel is sent on its own thread: one that hangs holds up
neither the sampling round nor the other channels.
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

from ..extensions import db
from ..models import Alert, Channel, Delivery, Notification
from ..timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 5
# Tries in all, and the wait before each retry: 30 s, 2 min, 10 min, 30 min.
MAX_ATTEMPTS = 5
RETRY_SECONDS = (30, 120, 600, 1800)
# Longer than any one send can take: a claim older than this was left by a dead process.
LEASE_SECONDS = 120
BATCH = 100
SIGNATURE_HEADER = "X-Rosetta-Signature"

# urllib3 names each request's path at DEBUG, and a webhook's path may hold a token.
logging.getLogger("urllib3").setLevel(logging.INFO)

WORKERS = 8
# Notifications sent to one channel at the same time, at most.
PER_CHANNEL = 2
_executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="alert-delivery")
_kick_lock = threading.Lock()
# The deliveries this process has started and not finished, and the channel of each.
_sending: dict[Future[bool], int] = {}


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
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, int(time.time()), body)
    try:
        # Only the status is read (the body never is), each step within the timeout.
        with requests.post(
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


def send_apprise(url: str, payload: dict[str, Any]) -> Outcome:
    """Send the alert through Apprise: a title, the message and a link."""
    import apprise  # 0.2 s to import: loaded when a channel first needs it, not at start-up

    notifier = apprise.Apprise()
    if not notifier.add(url):
        return Outcome(False, error="Apprise cannot read this channel's URL")
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
    captured = _ThreadWarnings()
    apprise_log = logging.getLogger("apprise")
    apprise_log.addHandler(captured)
    try:
        ok = bool(
            notifier.notify(
                body=f"{alert['message']}\n\n{payload['url']}",
                title=_title(payload),
                notify_type=kind,
            )
        )
    finally:
        apprise_log.removeHandler(captured)
    if ok:
        return Outcome(True)
    reason = captured.lines[-1] if captured.lines else "the service refused the notification"
    return Outcome(False, error=reason[:500])


class _ThreadWarnings(logging.Handler):
    """Keep Apprise's warnings of this thread's send: others may send at the same time."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())


def send(channel: Channel, payload: dict[str, Any]) -> Outcome:
    """Send one payload to one channel; never raise."""
    try:
        if channel.type == "webhook":
            return send_webhook(channel.url, channel.secret, payload)
        return send_apprise(channel.url, payload)
    except Exception as exc:  # a bug or a broken secret must not stop the other channels
        log.warning("delivery to channel %s failed: %s", channel.name, type(exc).__name__)
        return Outcome(
            False, error=str(exc)[:500] if isinstance(exc, ValueError) else type(exc).__name__
        )


def record(
    notification: Notification, outcome: Outcome, started: datetime, duration_s: float
) -> Delivery:
    """Write the attempt to the channel's delivery log and settle the notification."""
    notification.attempts += 1
    notification.claimed_until = notification.claim_token = None
    if outcome.ok:
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
    db.session.commit()  # no transaction stays open while the channel is called
    started = utcnow()
    clock = time.monotonic()
    outcome = send(channel, notification.payload)
    record(notification, outcome, started, time.monotonic() - clock)
    db.session.commit()
    if not outcome.ok:
        log.warning(
            "alert notification %d to channel %s failed (try %d): %s",
            notification.id,
            channel.name,
            notification.attempts,
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
    claimed: list[tuple[int, int, str]] = []
    for row in due:
        if len(claimed) >= room or busy.get(row.channel_id, 0) >= PER_CHANNEL:
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
        except Exception:
            log.exception("delivering alert notification %d failed", notification_id)
            db.session.rollback()
            return False


def kick(now: datetime | None = None) -> list[Future[bool]]:
    """Start delivering what is due, each on a thread, without waiting: no more than there
    are free threads, and no more than PER_CHANNEL at once to one channel, so a channel that
    hangs holds up neither the others nor the notifications claimed after it."""
    app = cast("LocalProxy[Flask]", current_app)._get_current_object()
    with _kick_lock:
        room = WORKERS - len(_sending)
        if room <= 0:
            return []
        busy: dict[int, int] = {}
        for channel_id in _sending.values():
            busy[channel_id] = busy.get(channel_id, 0) + 1
        claimed = claim_due(now or utcnow(), room, busy)
        futures = []
        for notification_id, channel_id, token in claimed:
            future = _executor.submit(_deliver_in_context, app, notification_id, token)
            _sending[future] = channel_id
            futures.append(future)
    for future in futures:
        future.add_done_callback(_done)
    return futures


def _done(future: Future[bool]) -> None:
    with _kick_lock:
        _sending.pop(future, None)


def deliver_due(timeout_s: float = WEBHOOK_TIMEOUT_SECONDS * 3) -> int:
    """Deliver what is due, and wait for it and for what this process is still sending (the
    CLI, before it exits); return how many were delivered."""
    futures = set(kick())
    with _kick_lock:
        futures |= set(_sending)
    done, _ = wait(futures, timeout=timeout_s)
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
    notification = Notification(
        channel_id=channel.id,
        event="test",
        payload={"event": "test", "alert": alert, "url": f"{base}/alerts"},
        next_attempt_at=now,
        claimed_until=now + timedelta(seconds=LEASE_SECONDS),
    )
    db.session.add(notification)
    db.session.commit()
    clock = time.monotonic()
    outcome = send(channel, notification.payload)
    entry = record(notification, outcome, now, time.monotonic() - clock)
    db.session.commit()
    return entry
