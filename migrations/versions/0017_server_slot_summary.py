"""The dashboard at 10,000 sources: each server keeps a summary of its slots beside their
trends (how many, how many inactive, the worst, the growing ones' trends), and a server's
sources are found by an index.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

COLUMNS = ("slot_count", "inactive_slot_count", "worst_slot", "growing_slot_trends")
servers = sa.table(
    "servers",
    sa.column("id", sa.Integer()),
    sa.column("slot_trends", sa.JSON()),
    sa.column("slot_count", sa.Integer()),
    sa.column("inactive_slot_count", sa.Integer()),
    sa.column("worst_slot", sa.JSON(none_as_null=True)),
    sa.column("growing_slot_trends", sa.JSON(none_as_null=True)),
)


def _rank(name, figures):
    status = figures.get("wal_status")
    rank = ("lost", "unreserved").index(status) if status in ("lost", "unreserved") else 2
    retained = figures.get("retained_bytes")
    return rank, retained is None, -(retained or 0), name


def _summary(trends):
    """The summary as the model sets it (models.slot_summary when this was written)."""
    latest = {name: trend["slot"] for name, trend in trends.items() if trend.get("slot")}
    worst = min(latest, key=lambda name: _rank(name, latest[name]), default=None)
    growing = {name: trend for name, trend in trends.items() if (trend.get("growth") or 0) > 0}
    return {
        "slot_count": len(trends),
        "inactive_slot_count": sum(not figures.get("active", True) for figures in latest.values()),
        "worst_slot": {"slot_name": worst, **latest[worst]} if worst is not None else None,
        "growing_slot_trends": growing or None,
    }


def upgrade():
    with op.batch_alter_table("servers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slot_count", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("inactive_slot_count", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("worst_slot", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("growing_slot_trends", sa.JSON(), nullable=True))
    op.create_index(
        "ix_source_states_server_id_source_id",
        "source_states",
        ["server_id", "source_id"],
        unique=False,
    )
    # The servers sampled already, so the dashboard counts their slots before the next round.
    bind = op.get_bind()
    for server_id, trends in bind.execute(sa.select(servers.c.id, servers.c.slot_trends)):
        if trends:
            bind.execute(
                servers.update().where(servers.c.id == server_id).values(**_summary(trends))
            )


def downgrade():
    op.drop_index("ix_source_states_server_id_source_id", table_name="source_states")
    with op.batch_alter_table("servers", schema=None) as batch_op:
        for column in reversed(COLUMNS):
            batch_op.drop_column(column)
