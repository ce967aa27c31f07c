"""Alerts for pipelines: the settings of pipeline_failed and pipeline_lag, and the two rules.

An installation that upgrades gets both rules on, with their defaults, as a new one does.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

RULES = (
    "retained_wal",
    "slot_inactive",
    "slot_wal_status",
    "consumer_stalled",
    "source_unreachable",
    "exhaustion_forecast",
)
NEW_RULES = ("pipeline_failed", "pipeline_lag")


def _rules_check(batch_op, rules):
    batch_op.create_check_constraint(op.f("ck_alerts_rule"), f"rule IN {rules!r}")


def upgrade():
    with op.batch_alter_table("alert_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pipeline_failed_minutes", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pipeline_lag_warning_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pipeline_lag_critical_seconds", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE alert_settings SET pipeline_failed_minutes = 15, "
        "pipeline_lag_warning_seconds = 300, pipeline_lag_critical_seconds = 1800"
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_alerts_rule"), type_="check")
        _rules_check(batch_op, RULES + NEW_RULES)


def downgrade():
    # The older schema has no word for these rules: their alerts (and, by cascade, their
    # notifications) and silences go.
    op.execute("DELETE FROM alerts WHERE rule IN ('pipeline_failed', 'pipeline_lag')")
    op.execute("DELETE FROM silences WHERE rule IN ('pipeline_failed', 'pipeline_lag')")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_alerts_rule"), type_="check")
        _rules_check(batch_op, RULES)
    with op.batch_alter_table("alert_settings", schema=None) as batch_op:
        batch_op.drop_column("pipeline_lag_critical_seconds")
        batch_op.drop_column("pipeline_lag_warning_seconds")
        batch_op.drop_column("pipeline_failed_minutes")
