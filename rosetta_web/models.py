"""Every table Rosetta stores, in SQLAlchemy 2.0 typed style."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

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
    event,
    false,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Mapper, mapped_column, relationship, validates
from werkzeug.security import check_password_hash, generate_password_hash

from .channel_urls import mask_url
from .crypto import decrypt_secret, encrypt_secret
from .extensions import Model
from .shapes import Computed, Shaped, ref
from .timeutil import isoformat, utcnow

PIPELINE_STATUSES = ("START", "PAUSE", "REFRESH")
# What the engine that owns a pipeline says it is doing (issue 19; `stopped`: no engine owns it).
ENGINE_STATES = (
    "starting",
    "snapshotting",
    "streaming",
    "refreshing",
    "paused",
    "retrying",
    "failed",
    "stopped",
)
# Who may do what, least first: viewers read, operators run CDC, admins also manage accounts,
# alert channels and settings, and drop slots and publications.
ROLES = ("viewer", "operator", "admin")
MONITOR_STATUSES = ("OK", "ERROR", "BACKOFF", "PENDING")
ALERT_RULES = (
    "retained_wal",
    "slot_inactive",
    "slot_wal_status",
    "consumer_stalled",
    "source_unreachable",
    "exhaustion_forecast",
    "pipeline_failed",
    "pipeline_lag",
)
SEVERITIES = ("warning", "critical")
ALERT_STATES = ("firing", "resolved")
CHANNEL_TYPES = ("webhook", "apprise")
EVENTS = ("firing", "resolved", "repeat", "test")
# The global rule settings, and the keys of a source's alert_overrides.
ALERT_SETTING_KEYS = (
    "retained_warning_bytes",
    "retained_critical_bytes",
    "slot_inactive_minutes",
    "consumer_stalled_minutes",
    "unreachable_rounds",
    "forecast_hours",
    "pipeline_failed_minutes",
    "pipeline_lag_warning_seconds",
    "pipeline_lag_critical_seconds",
    "repeat_minutes",
)
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
        Computed(
            "alert_overrides",
            ref("AlertOverrides"),
            lambda source: {
                key: (source.alert_overrides or {}).get(key) for key in ALERT_SETTING_KEYS
            },
        ),
        "created_at",
        "updated_at",
        Computed(
            "readiness",
            {"oneOf": [{"type": "null"}, ref("Readiness")]},
            lambda source: source.readiness,
        ),
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
    # The alert settings this source sets for itself; a key absent or null takes the global.
    alert_overrides: Mapped[dict[str, int | None] | None] = mapped_column(JSON)
    # The latest readiness checks' result, as Readiness.to_dict() gave it; null until checked.
    readiness: Mapped[dict[str, Any] | None] = mapped_column(JSON)

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
        Computed(
            "readiness",
            {"oneOf": [{"type": "null"}, ref("Readiness")]},
            lambda destination: destination.readiness,
        ),
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
    # The latest readiness checks' result, as Readiness.to_dict() gave it; null until checked.
    readiness: Mapped[dict[str, Any] | None] = mapped_column(JSON)

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
        Computed(
            "refresh_tables",
            {
                "type": ["array", "null"],
                "items": {"type": "string"},
                "description": "REFRESH of these tables only (schema.table); null: all of them",
            },
            lambda pipeline: pipeline.refresh_tables,
        ),
        Computed(
            "refresh_skipped",
            {
                "type": ["array", "null"],
                "items": {"type": "string"},
                "description": "Tables a REFRESH of all of them leaves out (schema.table): "
                "they have no primary key, so their destination is an append-only history "
                "that REFRESH cannot repair; null when none is left out",
            },
            lambda pipeline: pipeline.refresh_skipped,
        ),
        Computed("engine", ref("EngineState"), lambda pipeline: Pipeline.engine_of(pipeline)),
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

    # REFRESH of some tables only ("schema.table" names); None: all of the publication's.
    refresh_tables: Mapped[list[str] | None] = mapped_column(JSON)
    # What a REFRESH of all of them leaves out: its tables without a primary key.
    refresh_skipped: Mapped[list[str] | None] = mapped_column(JSON)

    source: Mapped[Source] = relationship(back_populates="pipelines")
    destination: Mapped[Destination] = relationship(back_populates="pipelines")
    run: Mapped[PipelineRun | None] = relationship(
        back_populates="pipeline", cascade="all, delete-orphan", passive_deletes=True
    )

    # What the engine does with a pipeline, as the API shows it. The rule lives with the
    # pipelines' others, in pipelines/services.py, which sets this: models imports no area.
    engine_of: ClassVar[Callable[[Pipeline], dict[str, Any]]]


# The channel engine processes LISTEN on (PostgreSQL): a pipeline added, changed or deleted
# wakes them at once instead of at their next look.
ENGINE_CHANNEL = "rosetta_pipelines"


@event.listens_for(Pipeline, "after_insert")
@event.listens_for(Pipeline, "after_update")
@event.listens_for(Pipeline, "after_delete")
def _wake_engines(_mapper: Mapper[Pipeline], connection: Connection, _pipeline: Pipeline) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"NOTIFY {ENGINE_CHANNEL}")  # sent when the change commits


class PipelineRun(Model):
    """What the engine that owns a pipeline is doing, written by that engine."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (CheckConstraint(f"state IN {ENGINE_STATES!r}", name="state"),)

    pipeline_id: Mapped[int] = mapped_column(
        ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(20), info={"enum": ENGINE_STATES})
    reason: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(255))  # host:pid of the engine process
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # of the current state
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_try_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_lsn: Mapped[int | None] = mapped_column(BigInteger)  # the last source LSN loaded
    # The source's current WAL position minus last_lsn when last written (pg_wal_lsn_diff).
    lag_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Now minus the source commit time of the last change loaded; 0 when caught up and idle.
    lag_seconds: Mapped[float | None] = mapped_column(Float)

    pipeline: Mapped[Pipeline] = relationship(back_populates="run")


# A table's first copy: not begun, being copied, copied.
SNAPSHOT_STATES = ("pending", "copying", "done")


class PipelineTable(Model):
    """What a pipeline moved of one source table, in total, written by its engine."""

    __tablename__ = "pipeline_tables"

    pipeline_id: Mapped[int] = mapped_column(
        ForeignKey("pipelines.id", ondelete="CASCADE"), primary_key=True
    )
    table_name: Mapped[str] = mapped_column(String(255), primary_key=True)  # schema.table
    snapshot: Mapped[str | None] = mapped_column(String(10), info={"enum": SNAPSHOT_STATES})
    snapshot_rows: Mapped[int] = mapped_column(BigInteger, default=0)
    inserted: Mapped[int] = mapped_column(BigInteger, default=0)
    updated: Mapped[int] = mapped_column(BigInteger, default=0)
    deleted: Mapped[int] = mapped_column(BigInteger, default=0)
    last_change_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PipelineMinute(Model):
    """Rows a pipeline loaded into one table within one minute (by MERGE's counts)."""

    __tablename__ = "pipeline_minutes"
    __table_args__ = (
        Index("ux_pipeline_minutes", "pipeline_id", "minute", "table_name", unique=True),
    )

    id: Mapped[int] = mapped_column(BIGINT_ID, primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # its start, in UTC
    table_name: Mapped[str] = mapped_column(String(255))
    inserted: Mapped[int] = mapped_column(BigInteger, default=0)
    updated: Mapped[int] = mapped_column(BigInteger, default=0)
    deleted: Mapped[int] = mapped_column(BigInteger, default=0)


class PipelineLag(Model):
    """A pipeline's highest lag within one minute, as its engine wrote it."""

    __tablename__ = "pipeline_lags"
    __table_args__ = (Index("ux_pipeline_lags", "pipeline_id", "minute", unique=True),)

    id: Mapped[int] = mapped_column(BIGINT_ID, primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lag_seconds: Mapped[float | None] = mapped_column(Float)
    lag_bytes: Mapped[int | None] = mapped_column(BigInteger)


class PipelineError(Model):
    """One failure or retry of a pipeline's engine, the last 50 of each pipeline kept."""

    __tablename__ = "pipeline_errors"

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(
        ForeignKey("pipelines.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    message: Mapped[str] = mapped_column(Text)


# A Verify: asked for and under way (in an engine process), done, or failed.
VERIFY_STATES = ("running", "done", "failed")


class PipelineVerification(Model):
    """One Verify of a pipeline: asked for by an operator, done by an engine process."""

    __tablename__ = "pipeline_verifications"
    __table_args__ = (
        CheckConstraint(f"state IN {VERIFY_STATES!r}", name="state"),
        Index("ix_pipeline_verifications_pipeline_id", "pipeline_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(10), info={"enum": VERIFY_STATES})
    sample_keys: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # asked for
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str | None] = mapped_column(String(255))  # the engine process doing it
    ok: Mapped[bool | None] = mapped_column(Boolean)
    tables: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    message: Mapped[str | None] = mapped_column(Text)  # why it failed, or what to know


@event.listens_for(PipelineVerification, "after_insert")
def _wake_verifiers(
    _mapper: Mapper[PipelineVerification], connection: Connection, _one: PipelineVerification
) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"NOTIFY {ENGINE_CHANNEL}")


class EngineProcess(Model):
    """A running `flask rosetta engine` process, seen by its heartbeat."""

    __tablename__ = "engine_processes"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # host:pid
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Why this process cannot run engines (no Java runtime, say); None when it can.
    problem: Mapped[str | None] = mapped_column(Text)


class User(UserMixin, Model):
    """An account that signs in to the dashboard, with its role."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(f"role IN {ROLES!r}", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(10), default="operator", server_default="operator")
    # A disabled account's sessions and tokens stop working at its next request.
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set by an admin's password reset: the user must choose a new one at the next sign-in.
    must_change_password: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # Part of the id kept in the session cookie: changing it ends every session of the user.
    session_nonce: Mapped[str] = mapped_column(String(32), default=lambda: secrets.token_hex(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def is_active(self) -> bool:
        """Flask-Login signs in active accounts only: a disabled one is not."""
        return self.disabled_at is None

    def may(self, role: str) -> bool:
        """Tell whether the account's role is `role` or above."""
        return ROLES.index(self.role) >= ROLES.index(role)

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
    # A read-only token reads whatever its user may read and changes nothing.
    read_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    user: Mapped[User] = relationship(back_populates="tokens")


class LoginFailure(Model):
    """One failed sign-in, kept for the throttling window (shared by every worker)."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_username_failed_at", "username", "failed_at"),
        Index("ix_login_failures_ip_failed_at", "ip", "failed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80))
    # The client's address as the audit log records it: sign-in is throttled by it too.
    ip: Mapped[str | None] = mapped_column(String(45))
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
    __table_args__ = (
        CheckConstraint(f"status IN {MONITOR_STATUSES!r}", name="status"),
        # A server's first source (the owner of a slot on a database no source is on), by
        # an index lookup: the dashboard asks for it.
        Index("ix_source_states_server_id_source_id", "server_id", "source_id"),
    )

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
    # Per slot, what the alert rules need from earlier samples (alerts/engine/trends.py): the
    # growth fitted to the last hour, and since when the consumer has confirmed nothing.
    slot_trends: Mapped[dict[str, dict[str, Any]] | None] = mapped_column(JSON)
    # Per slot, the last hour's [epoch seconds, retained bytes] that growth is fitted to. Only
    # the round that stores the slots reads them: not loaded with the server unless asked.
    slot_points: Mapped[dict[str, list[list[float]]] | None] = mapped_column(JSON, deferred=True)
    # What pages read of its slots without a pass over them, set whenever slot_trends is (from
    # each slot's figures there, its last sample's; see slot_summary): how many slots, how many
    # have no consumer, the worst one's figures, and the trends of those whose retained WAL
    # grows, the only ones a forecast can come from. Null without slots.
    slot_count: Mapped[int | None] = mapped_column(Integer)
    inactive_slot_count: Mapped[int | None] = mapped_column(Integer)
    worst_slot: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # Read by the dashboard alone: not loaded with the server unless asked.
    growing_slot_trends: Mapped[dict[str, dict[str, Any]] | None] = mapped_column(
        JSON(none_as_null=True), deferred=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @validates("slot_trends")
    def _summarize_slots(
        self, key: str, value: dict[str, dict[str, Any]] | None
    ) -> dict[str, dict[str, Any]] | None:
        """Set the slots' summary from the trends being stored."""
        summary = slot_summary(value or {})
        self.slot_count = summary["slot_count"]
        self.inactive_slot_count = summary["inactive_slot_count"]
        self.worst_slot = summary["worst_slot"]
        self.growing_slot_trends = summary["growing_slot_trends"]
        return value

    @property
    def label(self) -> str:
        """Name the server as Prometheus labels and the API do: its identifier, else address."""
        return self.system_identifier or self.address

    @property
    def keeps_unlimited_wal(self) -> bool:
        """Tell whether max_slot_wal_keep_size is -1: a slot may retain WAL without bound."""
        return self.max_slot_wal_keep_size == "-1"


# The WAL statuses worse than any size: lost, then unreserved (about to be lost).
WORST_WAL_STATUSES = ("lost", "unreserved")


def slot_rank(slot_name: str, figures: dict[str, Any]) -> tuple[int, bool, int, str]:
    """Order slots worst first: lost, then unreserved, then the most WAL retained, by name."""
    status = figures.get("wal_status")
    rank = WORST_WAL_STATUSES.index(status) if status in WORST_WAL_STATUSES else 2
    retained = figures.get("retained_bytes")
    return rank, retained is None, -(retained or 0), slot_name


def slot_summary(trends: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Summarize a server's slots from their trends (alerts/engine/trends.py): how many, how
    many without a consumer, the worst one's figures, and the trends with a growth."""
    if not trends:
        return dict.fromkeys(
            ("slot_count", "inactive_slot_count", "worst_slot", "growing_slot_trends")
        )
    latest = {name: trend["slot"] for name, trend in trends.items() if trend.get("slot")}
    worst = min(latest, key=lambda name: slot_rank(name, latest[name]), default=None)
    growing = {name: trend for name, trend in trends.items() if (trend.get("growth") or 0) > 0}
    return {
        "slot_count": len(trends),
        "inactive_slot_count": sum(not figures.get("active", True) for figures in latest.values()),
        "worst_slot": {"slot_name": worst, **latest[worst]} if worst is not None else None,
        "growing_slot_trends": growing or None,
    }


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
        Computed(
            "growth_bytes_per_hour",
            {
                "type": ["number", "null"],
                "description": "Retained WAL's growth, fitted over the last hour (Theil-Sen); "
                "null when not growing or unknown",
            },
            lambda slot: slot.forecast.growth_bytes_per_hour if slot.forecast else None,
        ),
        Computed(
            "eta_critical",
            {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "When it reaches the critical threshold at that rate",
            },
            lambda slot: isoformat(slot.forecast.eta_critical) if slot.forecast else None,
        ),
        Computed(
            "eta_lost",
            {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "When safe_wal_size reaches 0 at that rate: the slot is lost",
            },
            lambda slot: isoformat(slot.forecast.eta_lost) if slot.forecast else None,
        ),
    )
    __table_args__ = (
        Index(
            "ix_slot_metrics_server_id_recorded_at",
            "server_id",
            "recorded_at",
            postgresql_include=["slot_name", "database", "retained_bytes", "series_started_at"],
        ),
    )

    # Not a column: set by whoever reads the slot for the API or a page (alerts services).
    # An alerts.engine.trends.Forecast, typed Any so that the models import no area.
    __allow_unmapped__ = True
    forecast: Any = None

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
    # When this series of the slot began: a slot dropped and created again under its name
    # starts a new one, and its chart line breaks there. Null on rows stored before 0010.
    series_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SampleError(Model):
    """One failed sampling attempt: when, and why (never a secret)."""

    __tablename__ = "sample_errors"
    __table_args__ = (Index("ix_sample_errors_source_id_recorded_at", "source_id", "recorded_at"),)

    id: Mapped[int] = mapped_column(BIGINT_ID, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    error: Mapped[str] = mapped_column(String(500))


WAL_ROLLUP_FIGURES = ("size_bytes", "retained_bytes", "wal_rate_bytes_per_second")


class WalRollup(Model):
    """A source's samples within one hour or one day (monitor/rollups.py): the last one's
    figures at its own time, each figure's min and max, how many; and its failed samples.

    Kept WAL_ROLLUP_RETENTION_DAYS, longer than the samples: charts of long ranges read them.
    """

    __tablename__ = "wal_rollups"
    __table_args__ = (
        # What a chart reads of a source's range, in the index itself (on PostgreSQL): the
        # source's rows lie together there, not each on a table page of its own.
        Index(
            "ix_wal_rollups_chart",
            "source_id",
            "bucket_seconds",
            "bucket_start",
            postgresql_include=[
                "last_at",
                *(
                    f"{name}{suffix}"
                    for name in WAL_ROLLUP_FIGURES
                    for suffix in ("", "_min", "_max")
                ),
                "error_count",
                "last_error_at",
                "last_error",
            ],
        ),
    )

    source_id: Mapped[int] = mapped_column(
        ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
    )
    bucket_seconds: Mapped[int] = mapped_column(Integer, primary_key=True)  # 3600 or 86400
    bucket_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    # The bucket's last good sample's time (null when every sample in it failed); the figures
    # without a suffix are that sample's.
    last_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sample_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes_min: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes_max: Mapped[int | None] = mapped_column(BigInteger)
    retained_bytes: Mapped[int | None] = mapped_column(BigInteger)
    retained_bytes_min: Mapped[int | None] = mapped_column(BigInteger)
    retained_bytes_max: Mapped[int | None] = mapped_column(BigInteger)
    wal_rate_bytes_per_second: Mapped[float | None] = mapped_column(Float)
    wal_rate_bytes_per_second_min: Mapped[float | None] = mapped_column(Float)
    wal_rate_bytes_per_second_max: Mapped[float | None] = mapped_column(Float)
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(500))


class SlotRollup(Model):
    """One slot of a server within one hour or one day: its last sample's retained WAL at its
    own time, the min and max, how many samples (monitor/rollups.py)."""

    __tablename__ = "slot_rollups"
    __table_args__ = (
        # A range of every slot of a server (which to chart, the rest summed); the primary key
        # reads one slot's range.
        Index(
            "ix_slot_rollups_server_id_bucket_seconds_bucket_start",
            "server_id",
            "bucket_seconds",
            "bucket_start",
        ),
        # What a chart reads of the slots' ranges, in the index itself (on PostgreSQL).
        Index(
            "ix_slot_rollups_chart",
            "server_id",
            "bucket_seconds",
            "slot_name",
            "bucket_start",
            postgresql_include=[
                "last_at",
                "sample_count",
                "retained_bytes",
                "retained_bytes_min",
                "retained_bytes_max",
                "database",
                "series_started_at",
            ],
        ),
    )

    server_id: Mapped[int] = mapped_column(
        ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True
    )
    slot_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    bucket_seconds: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sample_count: Mapped[int] = mapped_column(Integer, default=0)
    retained_bytes: Mapped[int | None] = mapped_column(BigInteger)
    retained_bytes_min: Mapped[int | None] = mapped_column(BigInteger)
    retained_bytes_max: Mapped[int | None] = mapped_column(BigInteger)
    # The last sample's: the slot's database, and when its series began (its line breaks
    # where a slot dropped and created again starts a new one).
    database: Mapped[str | None] = mapped_column(String(63))
    series_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


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


class MetricsExposition(Model):
    """The monitor's series of GET /metrics as the last stored round left them, rendered once
    and served as is by every process: one row. Null until rendered, or once a source's change
    made them stale; a scrape renders its own meanwhile (monitor/prometheus.py)."""

    __tablename__ = "metrics_exposition"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    # Prometheus's text format (0.0.4), and OpenMetrics 1.0 without its closing "# EOF".
    text_plain: Mapped[str | None] = mapped_column(Text)
    openmetrics: Mapped[str | None] = mapped_column(Text)
    rendered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A random id of each rendering: a process holding one in memory reads only this.
    rendering: Mapped[str | None] = mapped_column(String(32))


class AlertSettings(Shaped, Model):
    """The global alert rule settings: one row. A null setting turns its rule off."""

    __tablename__ = "alert_settings"
    api_name = "AlertSettings"
    api_fields = ALERT_SETTING_KEYS
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    retained_warning_bytes: Mapped[int | None] = mapped_column(
        BigInteger, doc="A slot retaining this much WAL raises a warning"
    )
    retained_critical_bytes: Mapped[int | None] = mapped_column(
        BigInteger, doc="A slot retaining this much WAL raises a critical alert"
    )
    slot_inactive_minutes: Mapped[int | None] = mapped_column(
        Integer, doc="A slot without a consumer this long raises a warning"
    )
    consumer_stalled_minutes: Mapped[int | None] = mapped_column(
        Integer,
        doc="A connected consumer confirming nothing this long while WAL is written raises a "
        "warning",
    )
    unreachable_rounds: Mapped[int | None] = mapped_column(
        Integer, doc="A source failing this many rounds in a row raises a critical alert"
    )
    forecast_hours: Mapped[int | None] = mapped_column(
        Integer,
        doc="A slot forecast to reach the critical threshold, or to be lost, within this many "
        "hours raises a warning (critical under 1 h)",
    )
    pipeline_failed_minutes: Mapped[int | None] = mapped_column(
        Integer,
        doc="A pipeline whose engine failed, or has been retrying this long, raises a critical "
        "alert",
    )
    pipeline_lag_warning_seconds: Mapped[int | None] = mapped_column(
        Integer, doc="A pipeline this far behind its source (seconds) raises a warning"
    )
    pipeline_lag_critical_seconds: Mapped[int | None] = mapped_column(
        Integer, doc="A pipeline this far behind its source (seconds) raises a critical alert"
    )
    repeat_minutes: Mapped[int | None] = mapped_column(
        Integer, doc="Notify again this often while an alert fires unacknowledged"
    )
    # Every evaluation writes it first: evaluations in several processes take turns.
    evaluated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Alert(Shaped, Model):
    """One alert: a rule firing for a slot of a server, a source or a pipeline, until it
    resolves."""

    __tablename__ = "alerts"
    api_name = "Alert"
    api_fields = (
        "id",
        "rule",
        "severity",
        "state",
        "source_id",
        "source_name",
        "slot_name",
        "value",
        "threshold",
        "message",
        "resolved_message",
        "started_at",
        "resolved_at",
        "acknowledged_by",
        Computed(
            "silenced_until",
            {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "While a silence covers the alert: when the silence ends",
            },
            lambda alert: isoformat(alert.silenced_until),
        ),
    )
    __table_args__ = (
        CheckConstraint(f"rule IN {ALERT_RULES!r}", name="rule"),
        CheckConstraint(f"severity IN {SEVERITIES!r}", name="severity"),
        CheckConstraint(f"state IN {ALERT_STATES!r}", name="state"),
        # One firing alert per key, whichever process evaluates.
        Index(
            "ux_alerts_firing_key",
            "key",
            unique=True,
            postgresql_where=text("state = 'firing'"),
            sqlite_where=text("state = 'firing'"),
        ),
        Index("ix_alerts_state_started_at", "state", "started_at"),
        Index("ix_alerts_source_id_started_at", "source_id", "started_at"),
    )

    # Plain attributes below are not columns: `silenced_until` is set by whoever reads the
    # alert, from the silences in force then.
    __allow_unmapped__ = True
    silenced_until: datetime | None = None

    id: Mapped[int] = mapped_column(BIGINT_ID, primary_key=True)
    # (rule, server, slot), (rule, source) or (rule, pipeline): what makes two evaluations the
    # same alert.
    key: Mapped[str] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(32), info={"enum": ALERT_RULES})
    severity: Mapped[str] = mapped_column(String(10), info={"enum": SEVERITIES})
    state: Mapped[str] = mapped_column(String(10), info={"enum": ALERT_STATES})
    source_id: Mapped[int | None] = mapped_column(
        ForeignKey("sources.id", ondelete="SET NULL"),
        doc="The source it is about; for a slot, the source on the slot's database; for a "
        "pipeline, the pipeline's source",
    )
    source_name: Mapped[str] = mapped_column(String(255))
    server_id: Mapped[int | None] = mapped_column(ForeignKey("servers.id", ondelete="SET NULL"))
    slot_name: Mapped[str | None] = mapped_column(
        String(63), doc="Null for a source's or a pipeline's alert"
    )
    value: Mapped[float | None] = mapped_column(
        Float,
        doc="What was measured, in the threshold's unit (slot_wal_status: 1 unreserved, 2 lost)",
    )
    threshold: Mapped[float | None] = mapped_column(Float, doc="The setting it crossed")
    message: Mapped[str] = mapped_column(String(1000))
    resolved_message: Mapped[str | None] = mapped_column(
        String(1000), doc="What resolved it, in its own words; null while it fires"
    )
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A forecast that comes back clear is held until a second sample of its server says so
    # too: the time of the first clear sample.
    clear_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The last notification queued for it (fire, escalation or repeat), and at what severity.
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notified_severity: Mapped[str | None] = mapped_column(String(10))
    # What the last notification said of the slot's wal_status (unreserved, then lost).
    notified_wal_status: Mapped[str | None] = mapped_column(String(16))
    acknowledged_by: Mapped[str | None] = mapped_column(String(80))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Silence(Shaped, Model):
    """Notifications for a source (or one rule on it) held back until a time."""

    __tablename__ = "silences"
    api_name = "Silence"
    api_fields = ("id", "source_id", "rule", "ends_at", "comment", "created_by", "created_at")

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    rule: Mapped[str | None] = mapped_column(
        String(32), info={"enum": ALERT_RULES}, doc="Null silences every rule"
    )
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    comment: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Channel(Shaped, TimestampMixin, Model):
    """Where notifications go: a signed webhook, or any service Apprise knows by URL."""

    __tablename__ = "channels"
    api_name = "Channel"
    api_fields = (
        "id",
        "name",
        "type",
        Computed(
            "url",
            {"type": "string", "description": "The URL, its credentials masked"},
            lambda channel: channel.masked_url,
        ),
        Computed(
            "secret_set",
            {"type": "boolean", "description": "Whether a webhook signing secret is stored"},
            lambda channel: bool(channel.secret_encrypted),
        ),
        "min_severity",
        "source_ids",
        "created_at",
        "updated_at",
    )
    __table_args__ = (
        CheckConstraint(f"type IN {CHANNEL_TYPES!r}", name="type"),
        CheckConstraint(f"min_severity IN {SEVERITIES!r}", name="min_severity"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(10), info={"enum": CHANNEL_TYPES})
    url_encrypted: Mapped[str] = mapped_column(Text)
    masked_url: Mapped[str] = mapped_column(String(2000))
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    min_severity: Mapped[str] = mapped_column(
        String(10), default="warning", info={"enum": SEVERITIES}
    )
    source_ids: Mapped[list[int]] = mapped_column(
        JSON,
        default=list,
        info={"schema": {"type": "array", "items": {"type": "integer"}}},
        doc="The sources whose alerts it receives; empty: every source",
    )

    @property
    def url(self) -> str:
        """Decrypt the URL (for delivering only, never for display)."""
        return decrypt_secret(self.url_encrypted)

    @url.setter
    def url(self, plaintext: str) -> None:
        self.url_encrypted = encrypt_secret(plaintext)
        self.masked_url = mask_url(plaintext)

    @property
    def secret(self) -> str | None:
        """Decrypt the webhook signing secret (for signing only)."""
        return decrypt_secret(self.secret_encrypted) if self.secret_encrypted else None

    @secret.setter
    def secret(self, plaintext: str | None) -> None:
        self.secret_encrypted = encrypt_secret(plaintext) if plaintext else None

    def wants(self, severity: str, source_id: int | None) -> bool:
        """Tell whether an alert of this severity, about this source, goes to the channel."""
        if SEVERITIES.index(severity) < SEVERITIES.index(self.min_severity):
            return False
        return not self.source_ids or source_id in self.source_ids


class Notification(Model):
    """The outbox: one notification for one channel, written with the alert change it tells.

    A delivery job claims it (claimed_until), sends it, and marks it delivered, or retries it
    later (next_attempt_at), or gives up after the last try (failed_at).
    """

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint(f"event IN {EVENTS!r}", name="event"),
        Index(
            "ix_notifications_pending",
            "next_attempt_at",
            postgresql_where=text("delivered_at IS NULL AND failed_at IS NULL"),
            sqlite_where=text("delivered_at IS NULL AND failed_at IS NULL"),
        ),
        Index("ix_notifications_alert_id", "alert_id"),
    )

    id: Mapped[int] = mapped_column(BIGINT_ID, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(10))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Who claimed it: a process sends only what it still holds when it gets to it.
    claim_token: Mapped[str | None] = mapped_column(String(32))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What a receiver drops repeats by: the same on every try of this notification, and
    # unlike the id, never used again by another installation or after a restore.
    delivery_id: Mapped[str] = mapped_column(String(36), default=lambda: str(uuid.uuid4()))


class Delivery(Shaped, Model):
    """One attempt to deliver a notification: the channel's delivery log."""

    __tablename__ = "deliveries"
    api_name = "Delivery"
    api_fields = (
        "id",
        "channel_id",
        "notification_id",
        "event",
        "attempted_at",
        "ok",
        "status_code",
        "error",
        "duration_ms",
    )
    __table_args__ = (Index("ix_deliveries_channel_id_attempted_at", "channel_id", "attempted_at"),)

    id: Mapped[int] = mapped_column(BIGINT_ID, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"))
    notification_id: Mapped[int] = mapped_column(
        BIGINT_ID, ForeignKey("notifications.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(String(10), info={"enum": EVENTS})
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer, doc="The webhook's HTTP status")
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(Integer)


AUDIT_ACTIONS = (
    "create",
    "update",
    "delete",
    "start",
    "pause",
    "refresh",
    "check",
    "create_publication",
    "drop_publication",
    "create_slot",
    "drop_slot",
    "ack",
    "silence",
    "sign_in",
    "sign_in_failed",
    "sign_out",
    "create_token",
    "revoke_token",
    "set_role",
    "disable_user",
    "verify",
)
AUDIT_TARGET_TYPES = (
    "source",
    "destination",
    "pipeline",
    "channel",
    "settings",
    "user",
    "token",
    "alert",
)
AUDIT_OUTCOMES = ("done", "refused", "failed")


class AuditRecord(Shaped, Model):
    """Who changed what, when, from where, and how it ended: one record per change, written
    in the change's own transaction. Append-only: on PostgreSQL a trigger refuses UPDATE,
    DELETE and TRUNCATE, but for the retention function's DELETE of old records."""

    __tablename__ = "audit_log"
    api_name = "AuditRecord"
    api_fields = (
        "id",
        "at",
        "actor",
        "token_name",
        "ip",
        "action",
        "target_type",
        "target_id",
        "target_name",
        "changes",
        "outcome",
        "message",
    )
    __table_args__ = (
        CheckConstraint(f"action IN {AUDIT_ACTIONS!r}", name="action"),
        CheckConstraint(f"outcome IN {AUDIT_OUTCOMES!r}", name="outcome"),
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_actor_id", "actor", "id"),
        Index("ix_audit_log_target", "target_type", "target_id", "id"),
        Index("ix_audit_log_action_id", "action", "id"),
    )

    id: Mapped[int] = mapped_column(BIGINT_ID, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str | None] = mapped_column(
        String(80), doc="The account's username; cli:<OS user> for the command line"
    )
    token_name: Mapped[str | None] = mapped_column(
        String(80), doc="The API token the actor used; null in the browser"
    )
    ip: Mapped[str | None] = mapped_column(String(45), doc="The client's address")
    action: Mapped[str] = mapped_column(String(24), info={"enum": AUDIT_ACTIONS})
    target_type: Mapped[str | None] = mapped_column(String(16), info={"enum": AUDIT_TARGET_TYPES})
    target_id: Mapped[int | None] = mapped_column(BigInteger)
    target_name: Mapped[str | None] = mapped_column(String(255))
    changes: Mapped[dict[str, Any]] = mapped_column(
        JSON,
        default=dict,
        info={
            "schema": {
                "type": "object",
                "additionalProperties": {
                    "oneOf": [
                        {"type": "array", "minItems": 2, "maxItems": 2},
                        {"type": "string", "enum": ["changed"]},
                    ]
                },
            }
        },
        doc='Each field changed as [before, after]; a secret only as "changed"',
    )
    outcome: Mapped[str] = mapped_column(String(8), info={"enum": AUDIT_OUTCOMES})
    message: Mapped[str | None] = mapped_column(
        String(1000), doc="Why it was refused or failed, or what it found"
    )
