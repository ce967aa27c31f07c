"""The audit log: one record per change, append-only.

On PostgreSQL a trigger refuses UPDATE, DELETE and TRUNCATE of audit_log. The one exception is
audit_log_prune(older_than), the retention: it deletes records older than its cutoff, and the
trigger itself never lets a record of the last day go. Like any trigger, it stops statements,
not the table's owner, who may drop it.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ACTIONS = (
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

APPEND_ONLY = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- audit_log_prune() names its cutoff (epoch seconds) for its transaction: only records
    -- older than it, and never one of the last day, may go.
    IF TG_OP = 'DELETE'
       AND coalesce(current_setting('rosetta.audit_prune_before', true), '') <> ''
       AND OLD.at < to_timestamp(current_setting('rosetta.audit_prune_before')::float8)
       AND OLD.at < now() - interval '1 day' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Old records go through audit_log_prune(older_than) only.';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE FUNCTION audit_log_prune(older_than timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    removed bigint;
    cutoff timestamptz := least(older_than, now() - interval '1 day');
BEGIN
    PERFORM set_config('rosetta.audit_prune_before', extract(epoch FROM cutoff)::text, true);
    DELETE FROM audit_log WHERE at < cutoff;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('rosetta.audit_prune_before', '', true);
    RETURN removed;
END
$$;
"""


def upgrade():
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=True),
        sa.Column("token_name", sa.String(length=80), nullable=True),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("target_type", sa.String(length=16), nullable=True),
        sa.Column("target_id", sa.BigInteger(), nullable=True),
        sa.Column("target_name", sa.String(length=255), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("message", sa.String(length=1000), nullable=True),
        sa.CheckConstraint(f"action IN {ACTIONS!r}", name=op.f("ck_audit_log_action")),
        sa.CheckConstraint(
            "outcome IN ('done', 'refused', 'failed')", name=op.f("ck_audit_log_outcome")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor_id", "audit_log", ["actor", "id"])
    op.create_index("ix_audit_log_target", "audit_log", ["target_type", "target_id", "id"])
    op.create_index("ix_audit_log_action_id", "audit_log", ["action", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE audit_log")  # its triggers go with it
        op.execute("DROP FUNCTION audit_log_prune(timestamptz)")
        op.execute("DROP FUNCTION audit_log_append_only()")
    else:
        op.drop_table("audit_log")
