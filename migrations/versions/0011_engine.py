"""The engine: what each pipeline's engine is doing, its errors, the engine processes, and a
REFRESH's tables.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

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


def upgrade():
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refresh_tables", sa.JSON(), nullable=True))
    op.create_table(
        "pipeline_runs",
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_lsn", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(f"state IN {ENGINE_STATES!r}", name=op.f("ck_pipeline_runs_state")),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pipeline_id"),
    )
    op.create_table(
        "pipeline_errors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pipeline_errors_pipeline_id", "pipeline_errors", ["pipeline_id"])
    op.create_table(
        "engine_processes",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade():
    op.drop_table("engine_processes")
    op.drop_index("ix_pipeline_errors_pipeline_id", table_name="pipeline_errors")
    op.drop_table("pipeline_errors")
    op.drop_table("pipeline_runs")
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("refresh_tables")
