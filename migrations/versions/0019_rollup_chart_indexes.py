"""Charts read a source's roll-ups and a server's slots' from an index that holds every
column they draw (INCLUDE, on PostgreSQL): one range of index pages, not a table page a row.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

WAL_FIGURES = ("size_bytes", "retained_bytes", "wal_rate_bytes_per_second")
WAL_DRAWN = [
    "last_at",
    *(f"{name}{suffix}" for name in WAL_FIGURES for suffix in ("", "_min", "_max")),
    "error_count",
    "last_error_at",
    "last_error",
]
SLOT_DRAWN = [
    "last_at",
    "sample_count",
    "retained_bytes",
    "retained_bytes_min",
    "retained_bytes_max",
    "database",
    "series_started_at",
]


def upgrade():
    op.create_index(
        "ix_wal_rollups_chart",
        "wal_rollups",
        ["source_id", "bucket_seconds", "bucket_start"],
        postgresql_include=WAL_DRAWN,
    )
    op.create_index(
        "ix_slot_rollups_chart",
        "slot_rollups",
        ["server_id", "bucket_seconds", "slot_name", "bucket_start"],
        postgresql_include=SLOT_DRAWN,
    )


def downgrade():
    op.drop_index("ix_slot_rollups_chart", table_name="slot_rollups")
    op.drop_index("ix_wal_rollups_chart", table_name="wal_rollups")
