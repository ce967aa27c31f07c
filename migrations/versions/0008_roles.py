"""Roles: each account is a viewer, an operator or an admin; accounts can be disabled or made
to change their password; tokens can be read-only.

Before roles every account could do everything: the first account made (the one /setup made)
becomes an admin, the others operators.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("role", sa.String(length=10), nullable=False, server_default="operator")
        )
        batch.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column(
                "must_change_password", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch.create_check_constraint(
            op.f("ck_users_role"), "role IN ('viewer', 'operator', 'admin')"
        )
    op.execute("UPDATE users SET role = 'admin' WHERE id = (SELECT min(id) FROM users)")
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(
            sa.Column("read_only", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade():
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("read_only")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("ck_users_role"), type_="check")
        batch.drop_column("must_change_password")
        batch.drop_column("disabled_at")
        batch.drop_column("role")
