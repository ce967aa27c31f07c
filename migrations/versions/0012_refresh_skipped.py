"""A REFRESH's skipped tables: those without a primary key, left out of a REFRESH of all.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refresh_skipped", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("refresh_skipped")
