"""The audit log: who changed what, when, from where, and how it ended.

A change's record is added to the session that makes the change, so both commit or neither
does. A change Rosetta refuses (a rule says no) or that fails is rolled back, and its record
is then written alone, saying why. A guard on the session refuses to commit a change to an
audited table, made in a request, that comes without a record: no route can forget one.
"""

from __future__ import annotations

import base64
import copy
import getpass
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain
from typing import Annotated, Any

from flask import current_app, g, has_app_context, has_request_context, request
from flask_login import current_user
from sqlalchemy import Select, delete, event, insert, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper, Session
from werkzeug.exceptions import HTTPException

from ..extensions import db
from ..models import (
    AUDIT_ACTIONS,
    AUDIT_TARGET_TYPES,
    AlertSettings,
    ApiToken,
    AuditRecord,
    Channel,
    Destination,
    Pipeline,
    Silence,
    Source,
    User,
)
from ..shapes import ChoiceArg, Declared, Described, IntArg, TextArg
from ..timeutil import ParameterError, isoformat, parse_moment, utcnow

log = logging.getLogger(__name__)

CHANGED = "changed"  # what a record says of a secret: that it changed, never its value
# Secret columns, by the name the operator knows the field by.
SECRET_COLUMNS = {
    "pg_password_encrypted": "pg_password",
    "snowflake_private_key_passphrase_encrypted": "snowflake_private_key_passphrase",
    "url_encrypted": "url",
    "secret_encrypted": "secret",
    "password_hash": "password",
}
# Bookkeeping nobody edits: never listed as a change.
UNLISTED = {
    "id",
    "created_at",
    "updated_at",
    "readiness",
    "session_nonce",
    "last_login_at",
    "last_used_at",
    "masked_url",  # follows the URL, a secret
    "token_hash",
    "prefix",
    "evaluated_at",
}
# What the guard watches: the tables an operator changes. Alerts and the monitor's tables
# change on their own; an acknowledgement is recorded where it is made.
AUDITED = (Source, Destination, Pipeline, Channel, AlertSettings, User, ApiToken, Silence)
TARGET_TYPES = {
    Source: "source",
    Destination: "destination",
    Pipeline: "pipeline",
    Channel: "channel",
    AlertSettings: "settings",
    User: "user",
    ApiToken: "token",
}


class UnrecordedChange(RuntimeError):
    """A transaction changed an audited table without an audit record: a bug, refused."""


@dataclass(frozen=True)
class Actor:
    """Who acts: an account (by a session or one of its tokens), or the command line."""

    name: str | None
    token_name: str | None = None
    ip: str | None = None


def current_actor() -> Actor:
    """Return who is acting in this request or command."""
    if has_app_context() and g.get("audit_actor") is not None:
        actor: Actor = g.audit_actor
        return actor
    if not has_request_context():
        return Actor(f"cli:{getpass.getuser()}")
    name = current_user.username if current_user.is_authenticated else None
    return Actor(name, g.get("token_name"), request.remote_addr)


def act_as(actor: Actor) -> None:
    """Name who acts for the rest of this app context (the command line, or a user signing
    in, who is no one's session yet)."""
    g.audit_actor = actor


@dataclass(frozen=True)
class Target:
    """What a record is about."""

    type: str | None
    id: int | None = None
    name: str | None = None


def target_of(entity: Any) -> Target:
    """Name an entity as the log does."""
    kind = TARGET_TYPES[type(entity)]
    if isinstance(entity, User):
        return Target(kind, entity.id, entity.username)
    if isinstance(entity, AlertSettings):
        return Target(kind, entity.id, "alert settings")
    return Target(kind, entity.id, entity.name)


def _listed(model: type) -> list[str]:
    mapper: Mapper[Any] = inspect(model)
    return [attr.key for attr in mapper.column_attrs if attr.key not in UNLISTED]


def snapshot(entity: Any) -> dict[str, Any]:
    """Return an entity's listed values now, to compare with after a change."""
    if entity is None:
        return {}
    return {key: copy.deepcopy(getattr(entity, key)) for key in _listed(type(entity))}


def _jsonable(value: Any) -> Any:
    return isoformat(value) if isinstance(value, datetime) else value


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Return the fields that differ as {field: [before, after]}; a secret as "changed"."""
    changes: dict[str, Any] = {}
    for key in chain(before, (k for k in after if k not in before)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key in SECRET_COLUMNS:
            changes[SECRET_COLUMNS[key]] = CHANGED
        elif isinstance(old, dict) or isinstance(new, dict):
            # A source's alert overrides: each key that changed, as alert_overrides.forecast_hours
            for sub in sorted({*(old or {}), *(new or {})}):
                pair = [(old or {}).get(sub), (new or {}).get(sub)]
                if pair[0] != pair[1]:
                    changes[f"{key}.{sub}"] = pair
        else:
            changes[key] = [_jsonable(old), _jsonable(new)]
    return changes


def in_key_order(value: Any) -> Any:
    """Return `value` with every object's keys in sorted order, as stored: the `json` column
    keeps the text json.dumps writes, which is then what json.dumps(sort_keys=True) gives
    (the CSV export reads it as stored)."""
    if isinstance(value, dict):
        return {key: in_key_order(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [in_key_order(item) for item in value]
    return value


def _values(
    action: str,
    target: Target,
    changes: dict[str, Any] | None,
    outcome: str,
    message: str | None,
) -> dict[str, Any]:
    assert action in AUDIT_ACTIONS, action
    assert target.type is None or target.type in AUDIT_TARGET_TYPES, target.type
    actor = current_actor()
    return {
        "at": utcnow(),
        "actor": actor.name[:80] if actor.name else None,
        "token_name": actor.token_name,
        "ip": actor.ip[:45] if actor.ip else None,
        "action": action,
        "target_type": target.type,
        "target_id": target.id,
        "target_name": target.name[:255] if target.name else None,
        "changes": in_key_order(changes or {}),
        "outcome": outcome,
        "message": message[:1000] if message else None,
    }


def record(
    action: str,
    target: Target,
    changes: dict[str, Any] | None = None,
    message: str | None = None,
) -> AuditRecord:
    """Add a done record to the session: it commits with the change it describes."""
    entry = AuditRecord(**_values(action, target, changes, "done", message))
    db.session.add(entry)
    return entry


def record_on(
    conn: Connection,
    action: str,
    target: Target,
    changes: dict[str, Any] | None = None,
    message: str | None = None,
) -> None:
    """Write a done record on a connection whose transaction holds the change."""
    conn.execute(insert(AuditRecord).values(**_values(action, target, changes, "done", message)))


def outcome_of(exc: BaseException) -> str:
    """Refused when a rule of Rosetta's or of the source said no (a domain error's 4xx);
    failed when it could not be done (a source that does not answer, or an error)."""
    status = getattr(exc, "status", None)
    return "refused" if isinstance(status, int) and status < 500 else "failed"


def _error_words(exc: BaseException) -> str:
    """Name an unexpected error without its statement or values: a database error's text
    holds the SQL and its parameters, encrypted secrets and password hashes among them."""
    cause = getattr(exc, "orig", None)
    if cause is None:
        return type(exc).__name__  # no telling what its text holds
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first_line[:200]}"


def record_refusal(
    action: str,
    target: Target,
    exc: BaseException,
    changes: dict[str, Any] | None = None,
) -> None:
    """Roll back what the refused change left in the session; write its record alone."""
    message = str(exc) if hasattr(exc, "status") else _error_words(exc)
    try:
        db.session.rollback()
        db.session.add(AuditRecord(**_values(action, target, changes, outcome_of(exc), message)))
        db.session.commit()
    except Exception:  # the database itself failed: the original error is what to report
        log.exception("the audit record of a failed %s could not be written", action)
        db.session.rollback()


@dataclass
class Change:
    """A change being made to one entity: what it was, to record what it became."""

    action: str
    entity: Any = None
    target: Target | None = None
    before: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, Any] | None = None  # what the record says, once it is written

    def record(
        self, changes: dict[str, Any] | None = None, message: str | None = None, **extra: Any
    ) -> AuditRecord:
        """Add the done record: the entity's fields as they were and are, plus `extra` as
        [before, after] pairs, or exactly `changes` when given."""
        if changes is None:
            after = {} if self.action == "delete" else snapshot(self.entity)
            changes = {**diff(self.before, after), **extra}
        self.changes = changes
        if self.entity is not None and inspect(self.entity).transient:
            db.session.add(self.entity)
        if self.entity is not None and self.entity.id is None:
            db.session.flush()  # a new entity's record names its id
        return record(self.action, self.about(), changes, message)

    def note(self) -> None:
        """Take what the change has set so far, for its refusal's record: a flush that fails
        later expires what the entity held."""
        self.changes = diff(self.before, snapshot(self.entity))

    def attempted(self) -> dict[str, Any]:
        """The fields the change had set when it was refused or failed, read without the
        database (its transaction may have failed, and a failed flush expires what it held)."""
        if self.changes is not None:
            return self.changes
        if self.entity is None:
            return {}
        loaded = inspect(self.entity).dict
        now = {key: loaded[key] for key in _listed(type(self.entity)) if key in loaded}
        return diff(self.before, {**self.before, **now})

    def about(self) -> Target:
        """Return the target, as given or as the entity names itself."""
        if self.target is not None:
            return self.target
        if self.entity is not None:
            return target_of(self.entity)
        return Target(None)


def begin(action: str, entity: Any = None, target: Target | None = None) -> Change:
    """Start a change to `entity` (or about `target`): what it is now, to record the rest.
    A new entity was nothing before."""
    stored = entity is not None and inspect(entity).persistent
    return Change(action, entity, target, snapshot(entity) if stored else {})


@contextmanager
def change(action: str, entity: Any = None, target: Target | None = None) -> Iterator[Change]:
    """Make a change that the block records with `.record()` before it commits; a refusal or
    an error in the block rolls back and writes the refused or failed record alone."""
    entry = begin(action, entity, target)
    about = entry.about() if entity is None or entity.id is not None else None
    try:
        yield entry
    except HTTPException:
        raise  # the request was malformed: no change was attempted
    except Exception as exc:
        if about is None:  # a new entity: what it was to be called
            name = getattr(entity, "name", None) or getattr(entity, "username", None)
            about = Target(TARGET_TYPES[type(entity)], None, name)
        record_refusal(action, entry.target or about, exc, entry.attempted())
        raise


# The guard


def _edited(obj: Any) -> bool:
    state = inspect(obj)
    return any(state.attrs[key].history.has_changes() for key in _listed(type(obj)))


def _after_flush(session: Session, _context: Any) -> None:
    if not has_request_context():
        return  # the monitor's own writes, and data a script or test loads itself
    info = session.info
    if any(isinstance(obj, AuditRecord) for obj in session.new):
        info["audit_recorded"] = True
    changed = [
        # The settings row made with the defaults on first read changes nothing.
        *(o for o in session.new if isinstance(o, AUDITED) and not isinstance(o, AlertSettings)),
        *(o for o in session.deleted if isinstance(o, AUDITED)),
        *(o for o in session.dirty if isinstance(o, AUDITED) and _edited(o)),
    ]
    if changed:
        info.setdefault("audit_unrecorded", set()).update(obj.__tablename__ for obj in changed)


def _before_commit(session: Session) -> None:
    session.flush()
    unrecorded = session.info.get("audit_unrecorded")
    if unrecorded and not session.info.get("audit_recorded"):
        _forget(session)
        raise UnrecordedChange(f"a change to {', '.join(sorted(unrecorded))} has no audit record")


def _forget(session: Session, *_args: Any) -> None:
    session.info.pop("audit_unrecorded", None)
    session.info.pop("audit_recorded", None)


def watch(session: Any) -> None:
    """Refuse to commit a change to an audited table, made in a request, without its record."""
    event.listen(session, "after_flush", _after_flush)
    event.listen(session, "before_commit", _before_commit)
    event.listen(session, "after_commit", _forget)
    event.listen(session, "after_rollback", _forget)


# Reading the log


@dataclass(frozen=True)
class AuditFilter:
    """What the log shows: by actor, action, target and time."""

    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def statement(self) -> Select[AuditRecord]:
        """Select the matching records, newest first."""
        stmt = select(AuditRecord)
        if self.actor:
            stmt = stmt.where(AuditRecord.actor == self.actor)
        if self.action:
            stmt = stmt.where(AuditRecord.action == self.action)
        if self.target_type:
            stmt = stmt.where(AuditRecord.target_type == self.target_type)
        if self.target_id is not None:
            stmt = stmt.where(AuditRecord.target_id == self.target_id)
        if self.since is not None:
            stmt = stmt.where(AuditRecord.at >= self.since)
        if self.until is not None:
            stmt = stmt.where(AuditRecord.at < self.until)
        return stmt.order_by(AuditRecord.id.desc())


MAX_BIGINT = 2**63 - 1
_MOMENT = "ISO-8601, or relative to now like 24h"
ACTOR_MAX_LENGTH = 80  # no account's name is longer
ACTOR = TextArg("actor", max_length=ACTOR_MAX_LENGTH, description="The account's username")
ACTION = ChoiceArg("action", choices=AUDIT_ACTIONS)
TARGET_TYPE = ChoiceArg("target_type", choices=AUDIT_TARGET_TYPES)
TARGET_ID = IntArg("target_id", minimum=0, maximum=MAX_BIGINT)
SINCE = TextArg("since", description=f"{_MOMENT}: records at or after it")
UNTIL = TextArg("until", description=f"{_MOMENT}: records before it")
FILTER_ARGS = (ACTOR, ACTION, TARGET_TYPE, TARGET_ID, SINCE, UNTIL)
FILTERS = tuple(arg.name for arg in FILTER_ARGS)
# The API's page; the log's own page shows a fixed number.
LIMIT = IntArg("limit", minimum=1, maximum=500, default=100)
CURSOR = TextArg("cursor", description="next_cursor of the page before")


@dataclass
class AuditQuery:
    """The log's filters as they were given, what they mean, and what is wrong with them."""

    filters: AuditFilter
    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)
    after_id: int | None = None  # the cursor: records older than this one


def read_query(args: Mapping[str, str], now: datetime) -> AuditQuery:
    """Read the filters and the cursor from a query string; each bad one is named."""
    values = {name: args.get(name, "").strip() for name in FILTERS if args.get(name, "").strip()}
    errors: dict[str, str] = {}
    actor = values.get("actor", "")
    if len(actor) > ACTOR_MAX_LENGTH or "\x00" in actor:
        errors["actor"] = (
            f"No actor's name is longer than {ACTOR_MAX_LENGTH} characters or holds a NUL."
        )
    for arg in (ACTION, TARGET_TYPE):
        if arg.name in values and values[arg.name] not in arg.choices:
            errors[arg.name] = f"Choose one of {', '.join(arg.choices)}."
    action, target_type = values.get("action"), values.get("target_type")
    target_id = None
    if "target_id" in values:
        raw = values["target_id"]
        if raw.isascii() and raw.isdigit() and TARGET_ID.within(int(raw)):
            target_id = int(raw)
        else:
            errors["target_id"] = "Enter a whole number: the id of the target."
    moments: dict[str, datetime | None] = {"since": None, "until": None}
    for name in moments:
        if name in values:
            try:
                moments[name] = parse_moment(name, values[name], now)
            except ParameterError as exc:
                errors[name] = str(exc)
    since, until = moments["since"], moments["until"]
    if since is not None and until is not None and until <= since:
        errors["until"] = "The end must be after the start."
    after_id = None
    cursor = args.get("cursor", "").strip()
    if cursor:
        after_id = decode_cursor(cursor)
        if after_id is None:
            errors["cursor"] = "This cursor is not one a page of the log gave: start again."
    filters = AuditFilter(
        actor=None if "actor" in errors else values.get("actor"),
        action=None if "action" in errors else action,
        target_type=None if "target_type" in errors else target_type,
        target_id=target_id,
        since=since,
        until=None if "until" in errors else until,
    )
    return AuditQuery(filters, values, errors, after_id)


def encode_cursor(record_id: int) -> str:
    """Turn the last record of a page into the cursor of the next."""
    return base64.urlsafe_b64encode(f"a{record_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int | None:
    """Return the id a cursor continues after, or None when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if raw[:1] != "a" or not raw[1:].isascii() or not raw[1:].isdigit() or len(raw) > 21:
        return None
    record_id = int(raw[1:])
    return record_id if record_id <= MAX_BIGINT else None


@dataclass(frozen=True)
class AuditPage(Declared):
    """One page of the log, newest first, and the cursor of the page after."""

    items: list[AuditRecord]
    next_cursor: Annotated[str | None, Described("The cursor of the next page; null on the last")]


def page(filters: AuditFilter, limit: int, after_id: int | None = None) -> AuditPage:
    """Return one page of matching records, newest first, and the cursor of the next."""
    stmt = filters.statement()
    if after_id is not None:
        stmt = stmt.where(AuditRecord.id < after_id)
    rows = list(db.session.scalars(stmt.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(rows, encode_cursor(rows[-1].id) if more else None)


def stream(filters: AuditFilter, batch: int = 1000) -> Iterator[AuditRecord]:
    """Yield every matching record, newest first, a batch at a time."""
    after_id = None
    while True:
        found = page(filters, batch, after_id)
        yield from found.items
        if found.next_cursor is None:
            return
        after_id = found.items[-1].id


def account_names() -> list[str]:
    """The accounts' names, offered by the page's actor filter (cli:<user> is typed)."""
    return list(db.session.scalars(select(User.username).order_by(User.username)))


# Retention


def prune(now: datetime | None = None) -> int:
    """Delete the records older than AUDIT_RETENTION_DAYS; return how many went.

    On PostgreSQL this goes through audit_log_prune(), the one DELETE its trigger allows.
    """
    cutoff = (now or utcnow()) - timedelta(days=current_app.config["AUDIT_RETENTION_DAYS"])
    if db.engine.dialect.name == "postgresql":
        removed = db.session.scalar(text("SELECT audit_log_prune(:cutoff)"), {"cutoff": cutoff})
    else:
        result = db.session.execute(delete(AuditRecord).where(AuditRecord.at < cutoff))
        removed = getattr(result, "rowcount", 0)
    db.session.commit()
    return int(removed or 0)
