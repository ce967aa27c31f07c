"""The WAL monitor: samples, slot samples, each source's latest state, sampler rounds.

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('monitor_rounds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('sources', sa.Integer(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('skipped', sa.Integer(), nullable=False),
    sa.Column('sampler', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_monitor_rounds'))
    )
    with op.batch_alter_table('monitor_rounds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_monitor_rounds_started_at'), ['started_at'], unique=False)

    op.create_table('wal_metrics',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('current_lsn', sa.String(length=32), nullable=False),
    sa.Column('wal_position_bytes', sa.BigInteger(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('retained_bytes', sa.BigInteger(), nullable=True),
    sa.Column('slot_count', sa.Integer(), nullable=False),
    sa.Column('inactive_slot_count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['source_id'], ['sources.id'], name=op.f('fk_wal_metrics_source_id_sources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wal_metrics'))
    )
    with op.batch_alter_table('wal_metrics', schema=None) as batch_op:
        batch_op.create_index('ix_wal_metrics_source_id_recorded_at', ['source_id', 'recorded_at'], unique=False)

    op.create_table('slot_metrics',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('wal_metric_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('slot_name', sa.String(length=63), nullable=False),
    sa.Column('plugin', sa.String(length=63), nullable=True),
    sa.Column('slot_type', sa.String(length=16), nullable=False),
    sa.Column('database', sa.String(length=63), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('retained_bytes', sa.BigInteger(), nullable=True),
    sa.Column('lag_bytes', sa.BigInteger(), nullable=True),
    sa.Column('wal_status', sa.String(length=16), nullable=True),
    sa.Column('safe_wal_size', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['source_id'], ['sources.id'], name=op.f('fk_slot_metrics_source_id_sources'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['wal_metric_id'], ['wal_metrics.id'], name=op.f('fk_slot_metrics_wal_metric_id_wal_metrics'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_slot_metrics'))
    )
    with op.batch_alter_table('slot_metrics', schema=None) as batch_op:
        batch_op.create_index('ix_slot_metrics_source_id_recorded_at', ['source_id', 'recorded_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_slot_metrics_wal_metric_id'), ['wal_metric_id'], unique=False)

    op.create_table('source_states',
    sa.Column('source_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_sampled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_duration_ms', sa.Integer(), nullable=True),
    sa.Column('latest_wal_metric_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('current_lsn', sa.String(length=32), nullable=True),
    sa.Column('wal_position_bytes', sa.BigInteger(), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('retained_bytes', sa.BigInteger(), nullable=True),
    sa.Column('slot_count', sa.Integer(), nullable=True),
    sa.Column('inactive_slot_count', sa.Integer(), nullable=True),
    sa.Column('server_version', sa.String(length=120), nullable=True),
    sa.Column('in_recovery', sa.Boolean(), nullable=True),
    sa.CheckConstraint("status IN ('OK', 'ERROR', 'BACKOFF', 'PENDING')", name=op.f('ck_source_states_status')),
    sa.ForeignKeyConstraint(['latest_wal_metric_id'], ['wal_metrics.id'], name=op.f('fk_source_states_latest_wal_metric_id_wal_metrics'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['source_id'], ['sources.id'], name=op.f('fk_source_states_source_id_sources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('source_id', name=op.f('pk_source_states'))
    )


def downgrade():
    op.drop_table('source_states')
    with op.batch_alter_table('slot_metrics', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_slot_metrics_wal_metric_id'))
        batch_op.drop_index('ix_slot_metrics_source_id_recorded_at')

    op.drop_table('slot_metrics')
    with op.batch_alter_table('wal_metrics', schema=None) as batch_op:
        batch_op.drop_index('ix_wal_metrics_source_id_recorded_at')

    op.drop_table('wal_metrics')
    with op.batch_alter_table('monitor_rounds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_monitor_rounds_started_at'))

    op.drop_table('monitor_rounds')
