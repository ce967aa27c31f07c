"""Charts: each sample's WAL rate, covering indexes for ranges, the dashboard's sparkline.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("source_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retained_history", sa.JSON(), nullable=True))
    with op.batch_alter_table("wal_metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wal_rate_bytes_per_second", sa.Float(), nullable=True))
        batch_op.drop_index("ix_wal_metrics_source_id_recorded_at")
        batch_op.create_index(
            "ix_wal_metrics_source_id_recorded_at",
            ["source_id", "recorded_at"],
            postgresql_include=["size_bytes", "retained_bytes", "wal_rate_bytes_per_second"],
        )
    with op.batch_alter_table("slot_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_slot_metrics_source_id_recorded_at")
        batch_op.create_index(
            "ix_slot_metrics_source_id_recorded_at",
            ["source_id", "recorded_at"],
            postgresql_include=["slot_name", "retained_bytes"],
        )


def downgrade():
    with op.batch_alter_table("slot_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_slot_metrics_source_id_recorded_at")
        batch_op.create_index("ix_slot_metrics_source_id_recorded_at", ["source_id", "recorded_at"])
    with op.batch_alter_table("wal_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_wal_metrics_source_id_recorded_at")
        batch_op.create_index("ix_wal_metrics_source_id_recorded_at", ["source_id", "recorded_at"])
        batch_op.drop_column("wal_rate_bytes_per_second")
    with op.batch_alter_table("source_states", schema=None) as batch_op:
        batch_op.drop_column("retained_history")
