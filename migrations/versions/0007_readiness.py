"""Readiness: the latest checks' result of each source and destination.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    for table in ("sources", "destinations"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("readiness", sa.JSON(), nullable=True))


def downgrade():
    for table in ("sources", "destinations"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("readiness")
