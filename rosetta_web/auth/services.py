"""Accounts, API tokens and sign-in throttling, callable without a request."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from ..crypto import hash_token
from ..extensions import db
from ..models import ApiToken, Installation, LoginFailure, User
from ..timeutil import as_utc, utcnow

TOKEN_PREFIX = "rst_"
# Compared against when the username is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash("rosetta-timing-equalizer")


def create_user(username: str, password: str) -> User:
    """Create an operator account with a hashed password."""
    user = User(username=username)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def create_first_user(username: str, password: str) -> User | None:
    """Create the first operator, or return None when another one won the race to do so.

    The installation row has a fixed key: of concurrent set-ups, on any database and however
    many workers, exactly one can insert it, and the account commits with it or not at all.
    """
    user = User(username=username)
    user.set_password(password)  # slow: hashed before the transaction that decides
    db.session.add_all([Installation(id=1), user])
    try:
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


def create_token(user: User, name: str) -> tuple[ApiToken, str]:
    """Create an API token for the operator; return it and the only copy of its secret."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user=user, name=name, token_hash=hash_token(raw), prefix=raw[:10])
    db.session.add(token)
    db.session.commit()
    return token, raw


def user_for_token(raw: str) -> User | None:
    """Return the operator a bearer token belongs to, noting when the token was last used."""
    token = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(raw)))
    if token is None:
        return None
    now = utcnow()
    # One write a minute at most: scripts may poll often.
    if token.last_used_at is None or now - as_utc(token.last_used_at) > timedelta(minutes=1):
        token.last_used_at = now
        db.session.commit()
    return token.user
