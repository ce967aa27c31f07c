"""Every table Rosetta stores, in SQLAlchemy 2.0 typed style."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from .crypto import decrypt_secret, encrypt_secret
from .extensions import db

PIPELINE_STATUSES = ("START", "PAUSE", "REFRESH")
MONITOR_STATUSES = ("OK", "ERROR", "BACKOFF", "PENDING")
# History tables grow without bound on PostgreSQL; SQLite only autoincrements INTEGER keys.
BIGINT_ID = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Return a stored time as aware UTC (SQLite hands back naive datetimes, meant as UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def isoformat(moment: datetime | None) -> str | None:
    """Format a stored time as ISO-8601 UTC with a Z."""
    if moment is None:
        return None
    return as_utc(moment).isoformat().replace("+00:00", "Z")


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
    # The monitor's state and history go with the source: the database cascades the delete.
    state: Mapped[SourceState | None] = relationship(
        back_populates="source", passive_deletes=True, cascade="all, delete-orphan"
    )

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
            "monitor": (
                self.state or SourceState(status="PENDING", consecutive_failures=0)
            ).to_dict(),
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
    # Part of the id kept in the session cookie: changing it ends every session of the user.
    session_nonce: Mapped[str] = mapped_column(String(32), default=lambda: secrets.token_hex(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    def get_id(self) -> str:
        """Identify the operator in the session cookie, by id and current session nonce."""
        return f"{self.id}.{self.session_nonce}"

    def end_sessions(self) -> None:
        """Invalidate every session cookie issued to this operator."""
        self.session_nonce = secrets.token_hex(16)

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


class SourceState(db.Model):
    """The WAL monitor's latest word on one source, so pages read it in constant time."""

    __tablename__ = "source_states"
    __table_args__ = (CheckConstraint(f"status IN {MONITOR_STATUSES!r}", name="status"),)

    source_id: Mapped[int] = mapped_column(
        ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(10), default="PENDING")
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_sampled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(500))
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_duration_ms: Mapped[int | None] = mapped_column(Integer)
    latest_wal_metric_id: Mapped[int | None] = mapped_column(
        BIGINT_ID, ForeignKey("wal_metrics.id", ondelete="SET NULL")
    )
    current_lsn: Mapped[str | None] = mapped_column(String(32))
    wal_position_bytes: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    retained_bytes: Mapped[int | None] = mapped_column(BigInteger)
    slot_count: Mapped[int | None] = mapped_column(Integer)
    inactive_slot_count: Mapped[int | None] = mapped_column(Integer)
    server_version: Mapped[str | None] = mapped_column(String(120))
    in_recovery: Mapped[bool | None] = mapped_column(Boolean)
    # The dashboard's sparkline: [bucket start (epoch s), most WAL retained] per half hour, 24 h.
    retained_history: Mapped[list[list[int]] | None] = mapped_column(JSON)

    source: Mapped[Source] = relationship(back_populates="state")

    def to_dict(self) -> dict[str, Any]:
        """Return the monitor state as the API shows it."""
        return {
            "status": self.status,
            "last_sampled_at": isoformat(self.last_sampled_at),
            "last_attempt_at": isoformat(self.last_attempt_at),
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "next_attempt_at": isoformat(self.next_attempt_at),
            "last_duration_ms": self.last_duration_ms,
            "current_lsn": self.current_lsn,
            "wal_position_bytes": self.wal_position_bytes,
            "size_bytes": self.size_bytes,
            "retained_bytes": self.retained_bytes,
            "slot_count": self.slot_count,
            "inactive_slot_count": self.inactive_slot_count,
            "server_version": self.server_version,
            "in_recovery": self.in_recovery,
        }


class WalMetric(db.Model):
    """One successful sample of a source's WAL."""

    __tablename__ = "wal_metrics"
    __table_args__ = (
        # Covering on PostgreSQL: a source's chart reads its range from the index alone,
        # though its rows lie scattered among every other source's on the heap.
        Index(
            "ix_wal_metrics_source_id_recorded_at",
            "source_id",
            "recorded_at",
            postgresql_include=["size_bytes", "retained_bytes", "wal_rate_bytes_per_second"],
        ),
    )

    id: Mapped[int] = mapped_column(BIGINT_ID, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    current_lsn: Mapped[str] = mapped_column(String(32))
    wal_position_bytes: Mapped[int] = mapped_column(BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    retained_bytes: Mapped[int | None] = mapped_column(BigInteger)
    slot_count: Mapped[int] = mapped_column(Integer, default=0)
    inactive_slot_count: Mapped[int] = mapped_column(Integer, default=0)
    # WAL written per second since the source's previous sample, worked out when stored so
    # that charting a month needs no pass over neighbouring rows.
    wal_rate_bytes_per_second: Mapped[float | None] = mapped_column(Float)

    def to_dict(self) -> dict[str, Any]:
        """Return the sample as the API shows it (the seed's fields first)."""
        return {
            "id": self.id,
            "source_id": self.source_id,
            "size_bytes": self.size_bytes,
            "recorded_at": isoformat(self.recorded_at),
            "current_lsn": self.current_lsn,
            "wal_position_bytes": self.wal_position_bytes,
            "retained_bytes": self.retained_bytes,
            "slot_count": self.slot_count,
            "inactive_slot_count": self.inactive_slot_count,
            "wal_rate_bytes_per_second": self.wal_rate_bytes_per_second,
        }


class SlotMetric(db.Model):
    """One replication slot as one sample saw it."""

    __tablename__ = "slot_metrics"
    __table_args__ = (
        Index(
            "ix_slot_metrics_source_id_recorded_at",
            "source_id",
            "recorded_at",
            postgresql_include=["slot_name", "retained_bytes"],
        ),
    )

    id: Mapped[int] = mapped_column(BIGINT_ID, primary_key=True)
    wal_metric_id: Mapped[int] = mapped_column(
        BIGINT_ID,
        ForeignKey("wal_metrics.id", ondelete="CASCADE"),
        index=True,
    )
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    slot_name: Mapped[str] = mapped_column(String(63))
    plugin: Mapped[str | None] = mapped_column(String(63))
    slot_type: Mapped[str] = mapped_column(String(16))
    database: Mapped[str | None] = mapped_column(String(63))
    active: Mapped[bool] = mapped_column(Boolean)
    retained_bytes: Mapped[int | None] = mapped_column(BigInteger)
    lag_bytes: Mapped[int | None] = mapped_column(BigInteger)
    wal_status: Mapped[str | None] = mapped_column(String(16))
    safe_wal_size: Mapped[int | None] = mapped_column(BigInteger)

    def to_dict(self) -> dict[str, Any]:
        """Return the slot as the API shows it."""
        return {
            "slot_name": self.slot_name,
            "plugin": self.plugin,
            "slot_type": self.slot_type,
            "database": self.database,
            "active": self.active,
            "retained_bytes": self.retained_bytes,
            "lag_bytes": self.lag_bytes,
            "wal_status": self.wal_status,
            "safe_wal_size": self.safe_wal_size,
            "recorded_at": isoformat(self.recorded_at),
        }


class MonitorRound(db.Model):
    """One round of the WAL sampler: when, by which process, how long, how many failed."""

    __tablename__ = "monitor_rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
    sources: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    skipped: Mapped[int] = mapped_column(Integer)
    sampler: Mapped[str] = mapped_column(String(255))
