"""Hourly and daily roll-ups of each source's WAL history and each slot's, built from the
samples kept.

Revision ID: 0018
Revises: 0017
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "wal_rollups",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("bucket_seconds", sa.Integer(), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sample_count", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("size_bytes_min", sa.BigInteger(), nullable=True),
        sa.Column("size_bytes_max", sa.BigInteger(), nullable=True),
        sa.Column("retained_bytes", sa.BigInteger(), nullable=True),
        sa.Column("retained_bytes_min", sa.BigInteger(), nullable=True),
        sa.Column("retained_bytes_max", sa.BigInteger(), nullable=True),
        sa.Column("wal_rate_bytes_per_second", sa.Float(), nullable=True),
        sa.Column("wal_rate_bytes_per_second_min", sa.Float(), nullable=True),
        sa.Column("wal_rate_bytes_per_second_max", sa.Float(), nullable=True),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_wal_rollups_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "source_id", "bucket_seconds", "bucket_start", name=op.f("pk_wal_rollups")
        ),
    )
    op.create_table(
        "slot_rollups",
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("slot_name", sa.String(length=63), nullable=False),
        sa.Column("bucket_seconds", sa.Integer(), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sample_count", sa.Integer(), nullable=False),
        sa.Column("retained_bytes", sa.BigInteger(), nullable=True),
        sa.Column("retained_bytes_min", sa.BigInteger(), nullable=True),
        sa.Column("retained_bytes_max", sa.BigInteger(), nullable=True),
        sa.Column("database", sa.String(length=63), nullable=True),
        sa.Column("series_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["servers.id"],
            name=op.f("fk_slot_rollups_server_id_servers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "server_id",
            "slot_name",
            "bucket_seconds",
            "bucket_start",
            name=op.f("pk_slot_rollups"),
        ),
    )
    op.create_index(
        "ix_slot_rollups_server_id_bucket_seconds_bucket_start",
        "slot_rollups",
        ["server_id", "bucket_seconds", "bucket_start"],
    )
    # History must not vanish on upgrade: the roll-ups of the samples kept, built in the
    # database a source (or server) at a time, by the code that builds them for the tests and
    # benchmarks (it names tables and columns in SQL, no model). Should a later migration
    # change these tables, freeze a copy of it here.
    from rosetta_web.monitor.rollups import backfill

    bind = op.get_bind()
    built = backfill(bind)
    if bind.dialect.name == "postgresql":
        # The planner's figures for the tables just filled, before the first chart reads them.
        op.execute("ANALYZE wal_rollups")
        op.execute("ANALYZE slot_rollups")
    logging.getLogger("alembic.env").info(
        "WAL roll-ups built: %d rows for %d sources, %d for the slots of %d servers",
        built.source_rows,
        built.sources,
        built.slot_rows,
        built.servers,
    )


def downgrade():
    op.drop_index("ix_slot_rollups_server_id_bucket_seconds_bucket_start", table_name="slot_rollups")
    op.drop_table("slot_rollups")
    op.drop_table("wal_rollups")
