"""Accounts, API tokens and sign-in throttling, callable without a request."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash

from ..crypto import hash_token
from ..extensions import db
from ..models import ApiToken, LoginFailure, User, utcnow

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


def user_count() -> int:
    """Count the operator accounts."""
    return db.session.scalar(db.select(db.func.count(User.id))) or 0


def find_user(username: str) -> User | None:
    """Find an operator by username (case-insensitive)."""
    return db.session.scalar(db.select(User).where(User.username == username.strip().lower()))


def authenticate(username: str, password: str) -> User | None:
    """Return the operator if the password is right, spending the same time if the name is not."""
    user = find_user(username)
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if user.check_password(password) else None


def _window_start() -> datetime:
    return utcnow() - timedelta(seconds=current_app.config["LOGIN_FAILURE_WINDOW_SECONDS"])


def throttled_for_seconds(username: str) -> int:
    """Return how long sign-in stays refused for this username (0 when it is allowed)."""
    failures = db.session.scalars(
        db.select(LoginFailure.failed_at)
        .where(LoginFailure.username == username, LoginFailure.failed_at >= _window_start())
        .order_by(LoginFailure.failed_at.desc())
        .limit(current_app.config["LOGIN_MAX_FAILURES"])
    ).all()
    if len(failures) < current_app.config["LOGIN_MAX_FAILURES"]:
        return 0
    oldest = failures[-1]
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    window = timedelta(seconds=current_app.config["LOGIN_FAILURE_WINDOW_SECONDS"])
    return max(1, int((oldest + window - utcnow()).total_seconds()) + 1)


def record_failure(username: str) -> None:
    """Remember one failed sign-in and forget the ones older than the window."""
    db.session.execute(db.delete(LoginFailure).where(LoginFailure.failed_at < _window_start()))
    db.session.add(LoginFailure(username=username[:80]))
    db.session.commit()


def clear_failures(username: str) -> None:
    """Forget the failed sign-ins of a username after it signs in."""
    db.session.execute(db.delete(LoginFailure).where(LoginFailure.username == username))
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
    token = db.session.scalar(db.select(ApiToken).where(ApiToken.token_hash == hash_token(raw)))
    if token is None:
        return None
    now = utcnow()
    last = token.last_used_at
    if last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    # One write a minute at most: scripts may poll often.
    if last is None or now - last > timedelta(minutes=1):
        token.last_used_at = now
        db.session.commit()
    return token.user
