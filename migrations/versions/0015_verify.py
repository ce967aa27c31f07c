"""Verify: each pipeline's Verify runs, and their audit action.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ACTIONS_BEFORE = (
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
)
ACTIONS = (*ACTIONS_BEFORE, "verify")


def _actions(actions):
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_constraint(op.f("ck_audit_log_action"), type_="check")
        batch.create_check_constraint(op.f("ck_audit_log_action"), f"action IN {actions!r}")


def upgrade():
    op.create_table(
        "pipeline_verifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("sample_keys", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("tables", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('running', 'done', 'failed')", name=op.f("ck_pipeline_verifications_state")
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name=op.f("fk_pipeline_verifications_pipeline_id_pipelines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_verifications")),
    )
    op.create_index(
        "ix_pipeline_verifications_pipeline_id", "pipeline_verifications", ["pipeline_id", "id"]
    )
    _actions(ACTIONS)


def downgrade():
    op.execute("DELETE FROM audit_log WHERE action = 'verify'")
    _actions(ACTIONS_BEFORE)
    op.drop_index("ix_pipeline_verifications_pipeline_id", table_name="pipeline_verifications")
    op.drop_table("pipeline_verifications")
