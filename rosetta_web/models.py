"""Every table Rosetta stores, in SQLAlchemy 2.0 typed style."""

from __future__ import annotations

import secrets
from datetime import datetime

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
from .extensions import Model
from .shapes import Computed, Shaped, ref
from .timeutil import utcnow

PIPELINE_STATUSES = ("START", "PAUSE", "REFRESH")
MONITOR_STATUSES = ("OK", "ERROR", "BACKOFF", "PENDING")
# History tables grow without bound on PostgreSQL; SQLite only autoincrements INTEGER keys.
BIGINT_ID = BigInteger().with_variant(Integer, "sqlite")


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Source(Shaped, TimestampMixin, Model):
    """A PostgreSQL database whose changes Rosetta captures."""

    __tablename__ = "sources"
    api_name = "Source"
    api_fields = (
        "id",
        "name",
        "pg_host",
        "pg_port",
        "pg_database",
        "pg_username",
        Computed(
            "pg_password_set",
            {"type": "boolean", "description": "Whether the password is stored."},
            lambda source: bool(source.pg_password_encrypted),
        ),
        "publication_name",
        "replication_id",
        "slot_name",
        "created_at",
        "updated_at",
        Computed(
            "monitor",
            ref("MonitorState"),
            lambda source: (
                source.state or SourceState(status="PENDING", consecutive_failures=0)
            ).to_dict(),
        ),
    )

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


class Destination(Shaped, TimestampMixin, Model):
    """A Snowflake account, database and schema that pipelines load into."""

    __tablename__ = "destinations"
    api_name = "Destination"
    api_fields = (
        "id",
        "name",
        "snowflake_account",
        "snowflake_user",
        "snowflake_database",
        "snowflake_schema",
        "snowflake_role",
        "snowflake_warehouse",
        "snowflake_private_key_path",
        Computed(
            "snowflake_private_key_passphrase_set",
            {"type": "boolean", "description": "Whether the passphrase is stored."},
            lambda destination: bool(destination.snowflake_private_key_passphrase_encrypted),
        ),
        "snowflake_host",
        "created_at",
        "updated_at",
    )

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


class Pipeline(Shaped, TimestampMixin, Model):
    """A source connected to a destination, with the status the operator wants it in."""

    __tablename__ = "pipelines"
    api_name = "Pipeline"
    api_fields = (
        "id",
        "name",
        "source_id",
        "destination_id",
        "status",
        "created_at",
        "updated_at",
    )
    __table_args__ = (CheckConstraint(f"status IN {PIPELINE_STATUSES!r}", name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    source_id: Mapped[int] = mapped_column(
        ForeignKey("sources.id", ondelete="RESTRICT"), index=True
    )
    destination_id: Mapped[int] = mapped_column(
        ForeignKey("destinations.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[str] = mapped_column(
        String(10), default="PAUSE", info={"enum": PIPELINE_STATUSES}
    )

    source: Mapped[Source] = relationship(back_populates="pipelines")
    destination: Mapped[Destination] = relationship(back_populates="pipelines")


class User(UserMixin, Model):
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


class Installation(Model):
    """The one row that says the first account was set up: only one /setup can insert it."""

    __tablename__ = "installation"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    set_up_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Model):
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


class LoginFailure(Model):
    """One failed sign-in, kept for the throttling window (shared by every worker)."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_username_failed_at", "username", "failed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80))
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SourceState(Shaped, Model):
    """The WAL monitor's latest word on one source, so pages read it in constant time."""

    __tablename__ = "source_states"
    api_name = "MonitorState"
    api_fields = (
        "status",
        "last_sampled_at",
        "last_attempt_at",
        "last_error",
        "consecutive_failures",
        "next_attempt_at",
        "last_duration_ms",
        "current_lsn",
        "wal_position_bytes",
        "size_bytes",
        "retained_bytes",
        "slot_count",
        "inactive_slot_count",
        "server_version",
        "in_recovery",
    )
    __table_args__ = (CheckConstraint(f"status IN {MONITOR_STATUSES!r}", name="status"),)

    source_id: Mapped[int] = mapped_column(
        ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(
        String(10), default="PENDING", info={"enum": MONITOR_STATUSES}
    )
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
    # The dashboard's sparkline: [bucket start (epoch s), most WAL retained] per bucket, 24 h.
    retained_history: Mapped[list[list[int]] | None] = mapped_column(JSON)
    # The same, drawn (rosetta_web/sparkline.py), so the dashboard reads no JSON.
    retained_sparkline: Mapped[str | None] = mapped_column(Text)
    # The server the source's database lives on, as its last sample identified it.
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id", ondelete="SET NULL"))

    source: Mapped[Source] = relationship(back_populates="state")
    server: Mapped[Server | None] = relationship()


class WalMetric(Shaped, Model):
    """One successful sample of a source's WAL."""

    __tablename__ = "wal_metrics"
    api_name = "WalMetric"
    # Scripts written against the first release read the first four fields: keep them first.
    api_fields = (
        "id",
        "source_id",
        "size_bytes",
        "recorded_at",
        "current_lsn",
        "wal_position_bytes",
        "retained_bytes",
        "slot_count",
        "inactive_slot_count",
        "wal_rate_bytes_per_second",
    )
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
    current_lsn: Mapped[str] = mapped_column(String(32), doc="e.g. 0/3000148")
    wal_position_bytes: Mapped[int] = mapped_column(BigInteger, doc="Bytes since 0/0")
    size_bytes: Mapped[int | None] = mapped_column(
        BigInteger, doc="WAL directory size in bytes; null without pg_monitor"
    )
    retained_bytes: Mapped[int | None] = mapped_column(
        BigInteger, doc="Most WAL any slot retains, in bytes; null without slots"
    )
    slot_count: Mapped[int] = mapped_column(Integer, default=0)
    inactive_slot_count: Mapped[int] = mapped_column(Integer, default=0)
    # WAL written per second since the source's previous sample, worked out when stored so
    # that charting a month needs no pass over neighbouring rows.
    wal_rate_bytes_per_second: Mapped[float | None] = mapped_column(
        Float, doc="WAL written per second since the previous sample"
    )


class Server(Model):
    """A PostgreSQL server (cluster): its slots and WAL are shared by all of its databases."""

    __tablename__ = "servers"

    id: Mapped[int] = mapped_column(primary_key=True)
    # pg_control_system()'s identifier; null until a sample has read it.
    system_identifier: Mapped[str | None] = mapped_column(String(32), unique=True)
    address: Mapped[str] = mapped_column(String(300))  # host:port of the source that found it
    max_slot_wal_keep_size: Mapped[str | None] = mapped_column(String(32))
    # When its slots were last stored: the latest slot rows carry this time.
    last_sampled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def label(self) -> str:
        """Name the server as Prometheus labels and the API do: its identifier, else address."""
        return self.system_identifier or self.address

    @property
    def keeps_unlimited_wal(self) -> bool:
        """Tell whether max_slot_wal_keep_size is -1: a slot may retain WAL without bound."""
        return self.max_slot_wal_keep_size == "-1"


class SlotMetric(Shaped, Model):
    """One replication slot of a server as one sample saw it; stored once per server."""

    __tablename__ = "slot_metrics"
    api_name = "Slot"
    api_fields = (
        "slot_name",
        "plugin",
        "slot_type",
        "database",
        "active",
        "inactive_since",
        "retained_bytes",
        "lag_bytes",
        "wal_status",
        "safe_wal_size",
        "recorded_at",
    )
    __table_args__ = (
        Index(
            "ix_slot_metrics_server_id_recorded_at",
            "server_id",
            "recorded_at",
            postgresql_include=["slot_name", "database", "retained_bytes"],
        ),
    )

    id: Mapped[int] = mapped_column(BIGINT_ID, primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    slot_name: Mapped[str] = mapped_column(String(63))
    plugin: Mapped[str | None] = mapped_column(String(63))
    slot_type: Mapped[str] = mapped_column(String(16))
    database: Mapped[str | None] = mapped_column(String(63))
    active: Mapped[bool] = mapped_column(Boolean)
    inactive_since: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True),
        doc="Since when no consumer is connected: PostgreSQL 17's own figure, else the first "
        "sample that saw it inactive; null while active",
    )
    retained_bytes: Mapped[int | None] = mapped_column(
        BigInteger, doc="Current position minus restart_lsn, in bytes"
    )
    lag_bytes: Mapped[int | None] = mapped_column(
        BigInteger, doc="Current position minus confirmed_flush_lsn, in bytes"
    )
    wal_status: Mapped[str | None] = mapped_column(String(16), doc="PostgreSQL 13+")
    safe_wal_size: Mapped[int | None] = mapped_column(
        BigInteger, doc="PostgreSQL 13+, bytes; null when max_slot_wal_keep_size is -1"
    )


class SampleError(Model):
    """One failed sampling attempt: when, and why (never a secret)."""

    __tablename__ = "sample_errors"
    __table_args__ = (Index("ix_sample_errors_source_id_recorded_at", "source_id", "recorded_at"),)

    id: Mapped[int] = mapped_column(BIGINT_ID, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    error: Mapped[str] = mapped_column(String(500))


class MonitorRound(Model):
    """One round of the WAL sampler: when, by which process, how long, how many failed."""

    __tablename__ = "monitor_rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    duration_ms: Mapped[int] = mapped_column(Integer)  # the whole round: sampling and storing
    sampling_ms: Mapped[int | None] = mapped_column(Integer)  # the probes, side by side
    storing_ms: Mapped[int | None] = mapped_column(Integer)  # the rows written, and the commit
    sources: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    skipped: Mapped[int] = mapped_column(Integer)
    sampler: Mapped[str] = mapped_column(String(255))
    # Sampled by hand (CLI, API, the Sample now button), not by the schedule.
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
