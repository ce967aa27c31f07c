"""Accounts, API tokens and sign-in throttling, callable without a request."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, Select, bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload
from werkzeug.security import check_password_hash, generate_password_hash

from ..audit import services as audit
from ..crypto import hash_token
from ..errors import DomainError
from ..extensions import built_once, db
from ..models import ApiToken, Installation, LoginFailure, User
from ..timeutil import as_utc, utcnow

TOKEN_PREFIX = "rst_"
# Compared against when the username is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("rosetta-timing-equalizer")


class LastAdmin(DomainError):
    """The change would leave Rosetta without an enabled admin."""

    def __init__(self, username: str) -> None:
        super().__init__(f"{username} is the last enabled admin: make another account admin first")


class AccountExists(DomainError):
    """Another account has the username."""

    def __init__(self, username: str) -> None:
        super().__init__(f"An account named {username} already exists")


def create_user(username: str, password: str, role: str = "operator") -> User:
    """Create an account with a hashed password and a role (AccountExists if the name is
    taken)."""
    user = User(username=username, role=role)
    with audit.change("create", user) as change:
        if find_user(username) is not None:
            raise AccountExists(username)
        user.set_password(password)
        try:
            change.record()
            db.session.commit()
        except IntegrityError:  # another admin took the name a moment ago
            raise AccountExists(username) from None
    return user


def create_first_user(username: str, password: str) -> User | None:
    """Create the first operator, or return None when another one won the race to do so.

    The installation row has a fixed key: of concurrent set-ups, on any database and however
    many workers, exactly one can insert it, and the account commits with it or not at all.
    """
    user = User(username=username, role="admin")  # the first account runs the installation
    user.set_password(password)  # slow: hashed before the transaction that decides
    db.session.add_all([Installation(id=1), user])
    try:
        audit.begin("create", user).record(
            {"username": [None, username], "role": [None, "admin"], "password": audit.CHANGED},
            "The first account, made when Rosetta was set up.",
        )
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return None
    return user


def user_count() -> int:
    """Count the operator accounts."""
    return db.session.scalar(select(func.count(User.id))) or 0


def find_user(username: str) -> User | None:
    """Find an operator by username (case-insensitive)."""
    return db.session.scalar(select(User).where(User.username == username.strip().lower()))


def authenticate(username: str, password: str) -> User | None:
    """Return the operator if the password is right, spending the same time if the name is not."""
    user = find_user(username)
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if user.check_password(password) else None


def _window() -> timedelta:
    return timedelta(seconds=current_app.config["LOGIN_FAILURE_WINDOW_SECONDS"])


@dataclass(frozen=True)
class Throttled:
    """A sign-in refused before its password is looked at: too many recent failures."""

    by: str  # "username" or "address"
    wait_seconds: int


def _wait(failed: ColumnElement[bool], limit: int, attempt_id: int) -> int:
    """Return the seconds until the failures matching `failed` (this attempt among them) are
    few enough for it to go on; 0 when they already are."""
    window = _window()
    rows = db.session.execute(
        select(LoginFailure.id, LoginFailure.failed_at)
        .where(failed, LoginFailure.failed_at >= utcnow() - window)
        .order_by(LoginFailure.failed_at, LoginFailure.id)
    ).all()
    if len(rows) <= limit:
        return 0
    failures = [row.failed_at for row in rows if row.id != attempt_id]
    # Allowed again once only limit-1 failures are left in the window.
    frees_at = as_utc(failures[len(failures) - limit]) + window
    return max(1, int((frees_at - utcnow()).total_seconds()) + 1)


def throttle_key(address: str | None) -> str | None:
    """Key sign-in failures by client: an IPv4 address, or an IPv6 address's /64 (one
    client is handed a whole /64, and could otherwise spray from as many addresses)."""
    if not address:
        return None
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:45]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def begin_attempt(username: str, address: str | None = None) -> Throttled | None:
    """Count this sign-in attempt against the username and the client's address; return how
    long to wait, or None to go on.

    The attempt is stored as a failure before the password is checked, and only then are
    failures counted, so concurrent guesses see each other: at most the allowed number get
    their password checked. A refused attempt is not kept, so hammering does not extend
    the wait; a successful sign-in clears the failures of its username (not of its address,
    or one account of the sprayer's own would wipe the count of every name it tried).
    """
    config = current_app.config
    db.session.execute(delete(LoginFailure).where(LoginFailure.failed_at < utcnow() - _window()))
    ip = throttle_key(address)
    attempt = LoginFailure(username=username, ip=ip)
    db.session.add(attempt)
    db.session.commit()
    attempt_id = attempt.id
    checks = [("username", LoginFailure.username == username, config["LOGIN_MAX_FAILURES"])]
    if ip is not None:
        checks.append(("address", LoginFailure.ip == ip, config["LOGIN_MAX_FAILURES_PER_ADDRESS"]))
    waits = [Throttled(by, _wait(failed, limit, attempt_id)) for by, failed, limit in checks]
    longest = max(waits, key=lambda throttled: throttled.wait_seconds)
    if not longest.wait_seconds:
        return None
    db.session.delete(attempt)
    db.session.commit()
    return longest


def clear_failures(username: str) -> None:
    """Forget the failed sign-ins of a username after it signs in."""
    db.session.execute(delete(LoginFailure).where(LoginFailure.username == username))
    db.session.commit()


def signed_in(user: User) -> None:
    """Note the sign-in on the account and in the audit log."""
    user.last_login_at = utcnow()
    audit.record("sign_in", audit.target_of(user))
    db.session.commit()


class SignInRefused(DomainError):
    """A sign-in was refused; the reason is for the log, the page says less."""

    status = 401


def sign_in_failed(username: str, reason: str) -> None:
    """Record a refused sign-in of an account. A name no account has is not kept: it may be
    a password typed in the wrong box."""
    user = find_user(username)
    if user is not None:
        target = audit.target_of(user)
    else:
        audit.act_as(replace(audit.current_actor(), name=None))
        target, reason = audit.Target("user"), "No account has the name typed."
    audit.record_refusal("sign_in_failed", target, SignInRefused(reason))


def sign_out(user: User) -> None:
    """End every session of the account, and record it."""
    user.end_sessions()
    audit.record("sign_out", audit.target_of(user))
    db.session.commit()


def create_token(user: User, name: str, read_only: bool = False) -> tuple[ApiToken, str]:
    """Create an API token acting as the user (or, read-only, reading as the user and changing
    nothing); return it and the only copy of its secret."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user=user, name=name, token_hash=hash_token(raw), prefix=raw[:10], read_only=read_only
    )
    db.session.add(token)
    audit.begin("create_token", token).record(
        {"name": [None, name], "user": [None, user.username], "read_only": [None, read_only]}
    )
    db.session.commit()
    return token, raw


def revoke_token(token: ApiToken) -> None:
    """Revoke an API token: calls signed with it are refused from now on."""
    audit.begin("revoke_token", token).record(
        {"name": [token.name, None], "user": [token.user.username, None]}
    )
    db.session.delete(token)
    db.session.commit()


class TokenStopped(DomainError):
    """The token's user must set a new password after an admin's reset: until then its
    tokens are refused, since whoever knew the old password may have made them."""

    status = 401

    def __init__(self) -> None:
        super().__init__(
            "This token is stopped: an admin reset its user's password, and the user's tokens "
            "work again once they choose a new one on their account page"
        )


def _token_select() -> Select[ApiToken]:
    return (
        select(ApiToken)
        .where(ApiToken.token_hash == bindparam("token_hash"))
        .options(joinedload(ApiToken.user))  # one query: every call signed with a token
    )


def token_for(raw: str) -> ApiToken | None:
    """Return the bearer token of an enabled user, noting when it was last used (TokenStopped
    while its user must choose a new password)."""
    token = db.session.scalar(built_once(_token_select), {"token_hash": hash_token(raw)})
    if token is None or not token.user.is_active:
        return None
    if token.user.must_change_password:
        raise TokenStopped()
    now = utcnow()
    # One write a minute at most: scripts may poll often.
    if token.last_used_at is None or now - as_utc(token.last_used_at) > timedelta(minutes=1):
        token.last_used_at = now
        db.session.commit()
    return token


def _enabled_admins(other_than: User) -> int:
    return (
        db.session.scalar(
            select(func.count(User.id)).where(
                User.role == "admin", User.disabled_at.is_(None), User.id != other_than.id
            )
        )
        or 0
    )


def all_users() -> list[User]:
    """Every account, by name."""
    return list(db.session.scalars(select(User).order_by(User.username)))


def tokens_revoked_words(count: int) -> str:
    """Say how many API tokens of an account went: 'its 2 API tokens revoked'."""
    if count == 0:
        return "it had no API tokens"
    return f"its {count} API tokens revoked" if count > 1 else "its API token revoked"


def _revoke_all(tokens: list[ApiToken]) -> dict[str, Any]:
    """Delete the tokens; return what the account's record says of them."""
    for token in tokens:
        db.session.delete(token)
    return {"tokens": [sorted(token.name for token in tokens), None]} if tokens else {}


def enable_user(user: User) -> User:
    """Let a disabled account sign in again (its old sessions stay ended, its tokens revoked)."""
    if user.disabled_at is not None:
        change = audit.begin("update", user)
        disabled_at = as_utc(user.disabled_at)
        # Disabling revokes every token; any made before it and still here predate that rule.
        stale = [token for token in user.tokens if as_utc(token.created_at) <= disabled_at]
        revoked = _revoke_all(stale)
        user.disabled_at = None
        message = None
        if stale:
            words = tokens_revoked_words(len(stale))
            message = f"Enabled; {words}: made before it was disabled, as disabling now does."
        change.record({"disabled": [True, False], **revoked}, message)
        db.session.commit()
    return user


def reset_password(user: User) -> str:
    """Give the account a new random password it must change at its next sign-in; end its
    sessions and stop its API tokens until then; return the password, to hand over once."""
    password = secrets.token_urlsafe(12)
    change = audit.begin("update", user)
    user.set_password(password)
    user.must_change_password = True
    user.end_sessions()
    count = len(user.tokens)
    tokens = "It has no API tokens to stop."
    if count:
        tokens = f"Its {count} API tokens are" if count > 1 else "Its API token is"
        tokens += " stopped until then."
    change.record(
        message=f"Password reset by an admin; to be changed at the next sign-in. {tokens}"
    )
    db.session.commit()
    return password


def change_password(user: User, password: str) -> None:
    """Store the account's own new password; other sessions of it end, this one goes on, and
    tokens stopped by an admin's reset work again."""
    change = audit.begin("update", user)
    after_reset = user.must_change_password
    user.set_password(password)
    user.must_change_password = False
    user.end_sessions()
    message = "Its API tokens work again." if after_reset and user.tokens else None
    change.record(message=message)
    db.session.commit()


def set_role(user: User, role: str) -> User:
    """Give the account a role; the last enabled admin keeps theirs."""
    with audit.change("set_role", user) as change:
        if user.role == "admin" and role != "admin" and not _enabled_admins(user):
            raise LastAdmin(user.username)
        user.role = role
        change.record()
        db.session.commit()
    return user


def disable_user(user: User) -> int:
    """Disable the account: its sessions end and its API tokens are revoked, so enabling it
    again does not bring them back; return how many tokens were revoked."""
    with audit.change("disable_user", user) as change:
        if user.role == "admin" and user.disabled_at is None and not _enabled_admins(user):
            raise LastAdmin(user.username)
        tokens = list(user.tokens)  # none once disabled, unless made since by the command line
        if user.disabled_at is None or tokens:
            changes: dict[str, Any] = {}
            if user.disabled_at is None:
                changes["disabled"] = [False, True]
            changes.update(_revoke_all(tokens))
            user.disabled_at = user.disabled_at or utcnow()
            change.record(
                changes=changes, message=f"Signed out; {tokens_revoked_words(len(tokens))}."
            )
        user.end_sessions()
        db.session.commit()
    return len(tokens)
