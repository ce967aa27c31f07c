"""/metrics rendered once per round: the monitor's series kept in one row for every process.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "metrics_exposition",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("text_plain", sa.Text(), nullable=True),
        sa.Column("openmetrics", sa.Text(), nullable=True),
        sa.Column("rendered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rendering", sa.String(length=32), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_metrics_exposition_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metrics_exposition")),
    )


def downgrade():
    op.drop_table("metrics_exposition")
