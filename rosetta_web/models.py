"""Every table Rosetta stores, in SQLAlchemy 2.0 typed style."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask_login import UserMixin
from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from .crypto import decrypt_secret, encrypt_secret
from .extensions import db

PIPELINE_STATUSES = ("START", "PAUSE", "REFRESH")


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def isoformat(moment: datetime | None) -> str | None:
    """Format a stored time as ISO-8601 UTC (SQLite hands back naive datetimes)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Source(TimestampMixin, db.Model):
    """A PostgreSQL database whose changes Rosetta captures."""

    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    pg_host: Mapped[str] = mapped_column(String(255))
    pg_port: Mapped[int] = mapped_column(Integer, default=5432)
    pg_database: Mapped[str] = mapped_column(String(63))
    pg_username: Mapped[str] = mapped_column(String(63))
    pg_password_encrypted: Mapped[str] = mapped_column(Text)
    publication_name: Mapped[str] = mapped_column(String(63))
    replication_id: Mapped[int] = mapped_column(Integer, default=0)
    slot_name: Mapped[str | None] = mapped_column(String(63))

    pipelines: Mapped[list[Pipeline]] = relationship(back_populates="source")

    @property
    def pg_password(self) -> str:
        """Decrypt the stored password (for connecting to the source only, never for display)."""
        return decrypt_secret(self.pg_password_encrypted)

    @pg_password.setter
    def pg_password(self, plaintext: str) -> None:
        self.pg_password_encrypted = encrypt_secret(plaintext)

    def to_dict(self) -> dict[str, Any]:
        """Return the source as the API shows it: every field but the password."""
        return {
            "id": self.id,
            "name": self.name,
            "pg_host": self.pg_host,
            "pg_port": self.pg_port,
            "pg_database": self.pg_database,
            "pg_username": self.pg_username,
            "pg_password_set": bool(self.pg_password_encrypted),
            "publication_name": self.publication_name,
            "replication_id": self.replication_id,
            "slot_name": self.slot_name,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
        }


class Destination(TimestampMixin, db.Model):
    """A Snowflake account, database and schema that pipelines load into."""

    __tablename__ = "destinations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    snowflake_account: Mapped[str] = mapped_column(String(255))
    snowflake_user: Mapped[str] = mapped_column(String(255))
    snowflake_database: Mapped[str] = mapped_column(String(255))
    snowflake_schema: Mapped[str] = mapped_column(String(255))
    snowflake_role: Mapped[str | None] = mapped_column(String(255))
    snowflake_warehouse: Mapped[str | None] = mapped_column(String(255))
    snowflake_private_key_path: Mapped[str] = mapped_column(String(1024))
    snowflake_private_key_passphrase_encrypted: Mapped[str | None] = mapped_column(Text)
    snowflake_host: Mapped[str | None] = mapped_column(String(255))

    pipelines: Mapped[list[Pipeline]] = relationship(back_populates="destination")

    @property
    def snowflake_private_key_passphrase(self) -> str | None:
        """Decrypt the stored key passphrase (for connecting only, never for display)."""
        if self.snowflake_private_key_passphrase_encrypted is None:
            return None
        return decrypt_secret(self.snowflake_private_key_passphrase_encrypted)

    @snowflake_private_key_passphrase.setter
    def snowflake_private_key_passphrase(self, plaintext: str | None) -> None:
        self.snowflake_private_key_passphrase_encrypted = (
            encrypt_secret(plaintext) if plaintext else None
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the destination as the API shows it: every field but the passphrase."""
        return {
            "id": self.id,
            "name": self.name,
            "snowflake_account": self.snowflake_account,
            "snowflake_user": self.snowflake_user,
            "snowflake_database": self.snowflake_database,
            "snowflake_schema": self.snowflake_schema,
            "snowflake_role": self.snowflake_role,
            "snowflake_warehouse": self.snowflake_warehouse,
            "snowflake_private_key_path": self.snowflake_private_key_path,
            "snowflake_private_key_passphrase_set": bool(
                self.snowflake_private_key_passphrase_encrypted
            ),
            "snowflake_host": self.snowflake_host,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
        }


class Pipeline(TimestampMixin, db.Model):
    """A source connected to a destination, with the status the operator wants it in."""

    __tablename__ = "pipelines"
    __table_args__ = (CheckConstraint(f"status IN {PIPELINE_STATUSES!r}", name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    source_id: Mapped[int] = mapped_column(
        ForeignKey("sources.id", ondelete="RESTRICT"), index=True
    )
    destination_id: Mapped[int] = mapped_column(
        ForeignKey("destinations.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[str] = mapped_column(String(10), default="PAUSE")

    source: Mapped[Source] = relationship(back_populates="pipelines")
    destination: Mapped[Destination] = relationship(back_populates="pipelines")

    def to_dict(self) -> dict[str, Any]:
        """Return the pipeline as the API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "source_id": self.source_id,
            "destination_id": self.destination_id,
            "status": self.status,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
        }


class User(UserMixin, db.Model):
    """An operator who signs in to the dashboard."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    def set_password(self, password: str) -> None:
        """Store a salted hash of the password."""
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """Tell whether the password matches the stored hash."""
        return check_password_hash(self.password_hash, password)


class ApiToken(db.Model):
    """A bearer token a script uses to call the API as an operator; only its hash is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(back_populates="tokens")


class LoginFailure(db.Model):
    """One failed sign-in, kept for the throttling window (shared by every worker)."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_username_failed_at", "username", "failed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80))
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
