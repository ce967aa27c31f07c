"""What a new operator and an attacker found: a slot's series, alerts held clear over two
samples and what resolved them, sign-in failures by address, and each notification's
delivery id.

Revision ID: 0010
Revises: 0009
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    # Forecast: slot series, alerts held clear over two samples, what resolved an alert
    with op.batch_alter_table("slot_metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("series_started_at", sa.DateTime(timezone=True)))
        batch_op.drop_index("ix_slot_metrics_server_id_recorded_at")
        batch_op.create_index(
            "ix_slot_metrics_server_id_recorded_at",
            ["server_id", "recorded_at"],
            unique=False,
            postgresql_include=["slot_name", "database", "retained_bytes", "series_started_at"],
        )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resolved_message", sa.String(length=1000)))
        batch_op.add_column(sa.Column("clear_since", sa.DateTime(timezone=True)))

    # Accounts
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ip", sa.String(length=45), nullable=True))
        batch_op.create_index("ix_login_failures_ip_failed_at", ["ip", "failed_at"], unique=False)

    # Alert delivery: each notification's id for receivers to drop repeats by, one for each
    # already stored (a pending one keeps it on every retry)
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivery_id", sa.String(length=36), nullable=True))
    notifications = sa.table(
        "notifications", sa.column("id", sa.BigInteger), sa.column("delivery_id", sa.String)
    )
    bind = op.get_bind()
    ids = list(bind.execute(sa.select(notifications.c.id)).scalars())
    fill = (
        notifications.update()
        .where(notifications.c.id == sa.bindparam("notification_id"))
        .values(delivery_id=sa.bindparam("new_id"))
    )
    for start in range(0, len(ids), 5000):
        bind.execute(
            fill,
            [
                {"notification_id": id_, "new_id": str(uuid.uuid4())}
                for id_ in ids[start : start + 5000]
            ],
        )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.alter_column("delivery_id", existing_type=sa.String(length=36), nullable=False)


def downgrade():
    # Forecast
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_column("clear_since")
        batch_op.drop_column("resolved_message")
    with op.batch_alter_table("slot_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_slot_metrics_server_id_recorded_at")
        batch_op.create_index(
            "ix_slot_metrics_server_id_recorded_at",
            ["server_id", "recorded_at"],
            unique=False,
            postgresql_include=["slot_name", "database", "retained_bytes"],
        )
        batch_op.drop_column("series_started_at")

    # Accounts
    with op.batch_alter_table("login_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_login_failures_ip_failed_at")
        batch_op.drop_column("ip")

    # Alert delivery
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_column("delivery_id")
