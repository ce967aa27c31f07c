"""Accounts, API tokens and sign-in throttling, callable without a request."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from ..audit import services as audit
from ..crypto import hash_token
from ..extensions import db
from ..models import ApiToken, Installation, LoginFailure, User
from ..resources import DomainError
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


def _window_start() -> datetime:
    return utcnow() - timedelta(seconds=current_app.config["LOGIN_FAILURE_WINDOW_SECONDS"])


def begin_attempt(username: str) -> int:
    """Count this sign-in attempt against the username; return seconds to wait (0: go on).

    The attempt is stored as a failure before the password is checked, and only then are
    failures counted, so concurrent guesses see each other: at most the allowed number get
    their password checked. A refused attempt is not kept, so hammering does not extend
    the wait; a successful sign-in clears the failures.
    """
    limit = current_app.config["LOGIN_MAX_FAILURES"]
    db.session.execute(delete(LoginFailure).where(LoginFailure.failed_at < _window_start()))
    attempt = LoginFailure(username=username)
    db.session.add(attempt)
    db.session.commit()
    attempt_id = attempt.id
    rows = db.session.execute(
        select(LoginFailure.id, LoginFailure.failed_at)
        .where(LoginFailure.username == username, LoginFailure.failed_at >= _window_start())
        .order_by(LoginFailure.failed_at, LoginFailure.id)
    ).all()
    if len(rows) <= limit:
        return 0
    db.session.delete(attempt)
    db.session.commit()
    failures = [row.failed_at for row in rows if row.id != attempt_id]
    window = timedelta(seconds=current_app.config["LOGIN_FAILURE_WINDOW_SECONDS"])
    # Allowed again once only limit-1 failures are left in the window.
    frees_at = as_utc(failures[len(failures) - limit]) + window
    return max(1, int((frees_at - utcnow()).total_seconds()) + 1)


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


def token_for(raw: str) -> ApiToken | None:
    """Return the bearer token of an enabled user, noting when it was last used."""
    token = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(raw)))
    if token is None or not token.user.is_active:
        return None
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


def enable_user(user: User) -> User:
    """Let a disabled account sign in again (its old sessions stay ended)."""
    if user.disabled_at is not None:
        audit.begin("update", user).record({"disabled": [True, False]})
        user.disabled_at = None
        db.session.commit()
    return user


def reset_password(user: User) -> str:
    """Give the account a new random password it must change at its next sign-in; end its
    sessions; return the password, to hand over once."""
    password = secrets.token_urlsafe(12)
    change = audit.begin("update", user)
    user.set_password(password)
    user.must_change_password = True
    user.end_sessions()
    change.record(message="Password reset by an admin; to be changed at the next sign-in.")
    db.session.commit()
    return password


def change_password(user: User, password: str) -> None:
    """Store the account's own new password; other sessions of it end, this one goes on."""
    change = audit.begin("update", user)
    user.set_password(password)
    user.must_change_password = False
    user.end_sessions()
    change.record()
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


def disable_user(user: User) -> User:
    """Disable the account: its sessions and tokens stop working at their next request."""
    with audit.change("disable_user", user) as change:
        if user.role == "admin" and user.disabled_at is None and not _enabled_admins(user):
            raise LastAdmin(user.username)
        if user.disabled_at is None:
            user.disabled_at = utcnow()
            change.record(changes={"disabled": [False, True]})
        user.end_sessions()
        db.session.commit()
    return user
