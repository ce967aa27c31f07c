"""Progress, as the engine records it: lag, and rows per table in total and per minute.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lag_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("lag_seconds", sa.Float(), nullable=True))
    op.create_table(
        "pipeline_tables",
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("table_name", sa.String(length=255), nullable=False),
        sa.Column("snapshot", sa.String(length=10), nullable=True),
        sa.Column("snapshot_rows", sa.BigInteger(), nullable=False),
        sa.Column("inserted", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.BigInteger(), nullable=False),
        sa.Column("last_change_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pipeline_id", "table_name"),
    )
    op.create_table(
        "pipeline_minutes",
        sa.Column("id", BIGINT_ID, nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("table_name", sa.String(length=255), nullable=False),
        sa.Column("inserted", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_pipeline_minutes",
        "pipeline_minutes",
        ["pipeline_id", "minute", "table_name"],
        unique=True,
    )
    op.create_table(
        "pipeline_lags",
        sa.Column("id", BIGINT_ID, nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lag_seconds", sa.Float(), nullable=True),
        sa.Column("lag_bytes", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ux_pipeline_lags", "pipeline_lags", ["pipeline_id", "minute"], unique=True)


def downgrade():
    op.drop_index("ux_pipeline_lags", table_name="pipeline_lags")
    op.drop_table("pipeline_lags")
    op.drop_index("ux_pipeline_minutes", table_name="pipeline_minutes")
    op.drop_table("pipeline_minutes")
    op.drop_table("pipeline_tables")
    with op.batch_alter_table("pipeline_runs", schema=None) as batch_op:
        batch_op.drop_column("lag_seconds")
        batch_op.drop_column("lag_bytes")
