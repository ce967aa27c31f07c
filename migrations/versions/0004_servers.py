"""Servers: each slot stored once per server and sample; failed samples kept.

Slots belong to the PostgreSQL server, not to one of its databases, so slot rows move from
per-source to per-server. Existing rows are kept: each source's server is first known by its
host and port (the monitor learns its system_identifier at the next sample and keeps the
row), and the copies two sources of one server stored of the same slot are merged.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "servers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("system_identifier", sa.String(length=32), nullable=True),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("max_slot_wal_keep_size", sa.String(length=32), nullable=True),
        sa.Column("last_sampled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_servers")),
        sa.UniqueConstraint("system_identifier", name=op.f("uq_servers_system_identifier")),
    )
    op.create_table(
        "sample_errors",
        sa.Column("id", BIGINT_ID, nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["sources.id"],
            name=op.f("fk_sample_errors_source_id_sources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sample_errors")),
    )
    with op.batch_alter_table("sample_errors", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sample_errors_source_id_recorded_at", ["source_id", "recorded_at"], unique=False
        )
    with op.batch_alter_table("source_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("server_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_source_states_server_id_servers"),
            "servers",
            ["server_id"],
            ["id"],
            ondelete="SET NULL",
        )
    # Two steps: SQLite rebuilds the table in a batch, and the rows it copies need the
    # default the column is added with; only then may the default go.
    with op.batch_alter_table("monitor_rounds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("manual", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("monitor_rounds", schema=None) as batch_op:
        batch_op.alter_column("manual", server_default=None)
    with op.batch_alter_table("slot_metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("server_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("inactive_since", sa.DateTime(timezone=True), nullable=True))

    # Every source's server, known for now by its address; then each slot row its server.
    op.execute(
        "INSERT INTO servers (address, created_at) "
        "SELECT DISTINCT pg_host || ':' || pg_port, CURRENT_TIMESTAMP FROM sources"
    )
    op.execute(
        "UPDATE source_states SET server_id = (SELECT servers.id FROM servers JOIN sources "
        "ON servers.address = sources.pg_host || ':' || sources.pg_port "
        "WHERE sources.id = source_states.source_id)"
    )
    op.execute(
        "UPDATE slot_metrics SET server_id = (SELECT source_states.server_id "
        "FROM source_states WHERE source_states.source_id = slot_metrics.source_id)"
    )
    op.execute(
        "DELETE FROM slot_metrics WHERE server_id IS NULL OR id NOT IN "
        "(SELECT min(id) FROM slot_metrics GROUP BY server_id, recorded_at, slot_name)"
    )
    op.execute(
        "UPDATE servers SET last_sampled_at = "
        "(SELECT max(recorded_at) FROM slot_metrics WHERE slot_metrics.server_id = servers.id)"
    )

    with op.batch_alter_table("slot_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_slot_metrics_source_id_recorded_at")
        batch_op.drop_index(batch_op.f("ix_slot_metrics_wal_metric_id"))
        batch_op.drop_constraint("fk_slot_metrics_source_id_sources", type_="foreignkey")
        batch_op.drop_constraint("fk_slot_metrics_wal_metric_id_wal_metrics", type_="foreignkey")
        batch_op.drop_column("source_id")
        batch_op.drop_column("wal_metric_id")
        batch_op.alter_column("server_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_slot_metrics_server_id_servers"),
            "servers",
            ["server_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(
            "ix_slot_metrics_server_id_recorded_at",
            ["server_id", "recorded_at"],
            unique=False,
            postgresql_include=["slot_name", "database", "retained_bytes"],
        )


def downgrade():
    # Slot history goes with the servers: the old per-source rows cannot be rebuilt.
    op.execute("DELETE FROM slot_metrics")
    with op.batch_alter_table("slot_metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_slot_metrics_server_id_recorded_at")
        batch_op.drop_constraint("fk_slot_metrics_server_id_servers", type_="foreignkey")
        batch_op.drop_column("inactive_since")
        batch_op.drop_column("server_id")
        batch_op.add_column(sa.Column("source_id", sa.Integer(), nullable=False))
        batch_op.add_column(sa.Column("wal_metric_id", BIGINT_ID, nullable=False))
        batch_op.create_foreign_key(
            batch_op.f("fk_slot_metrics_source_id_sources"),
            "sources",
            ["source_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_slot_metrics_wal_metric_id_wal_metrics"),
            "wal_metrics",
            ["wal_metric_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(
            batch_op.f("ix_slot_metrics_wal_metric_id"), ["wal_metric_id"], unique=False
        )
        batch_op.create_index(
            "ix_slot_metrics_source_id_recorded_at",
            ["source_id", "recorded_at"],
            unique=False,
            postgresql_include=["slot_name", "retained_bytes"],
        )
    with op.batch_alter_table("monitor_rounds", schema=None) as batch_op:
        batch_op.drop_column("manual")
    with op.batch_alter_table("source_states", schema=None) as batch_op:
        batch_op.drop_constraint("fk_source_states_server_id_servers", type_="foreignkey")
        batch_op.drop_column("server_id")
    with op.batch_alter_table("sample_errors", schema=None) as batch_op:
        batch_op.drop_index("ix_sample_errors_source_id_recorded_at")
    op.drop_table("sample_errors")
    op.drop_table("servers")
