"""Hardening: one installation row so that only one /setup can win; round timings; the
dashboard's sparkline drawn when stored.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "installation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("set_up_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_installation_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installation")),
    )
    # An installation with accounts already is set up.
    op.execute(
        "INSERT INTO installation (id, set_up_at) "
        "SELECT 1, CURRENT_TIMESTAMP WHERE EXISTS (SELECT 1 FROM users)"
    )
    with op.batch_alter_table("source_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retained_sparkline", sa.Text(), nullable=True))
    with op.batch_alter_table("monitor_rounds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sampling_ms", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("storing_ms", sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table("monitor_rounds", schema=None) as batch_op:
        batch_op.drop_column("storing_ms")
        batch_op.drop_column("sampling_ms")
    with op.batch_alter_table("source_states", schema=None) as batch_op:
        batch_op.drop_column("retained_sparkline")
    op.drop_table("installation")
