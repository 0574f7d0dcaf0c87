"""failed means retrying: a failure that will never be retried by itself is dead

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 00:30:00

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.execute("UPDATE deliveries SET status = 'dead' "
               "WHERE status = 'failed' AND next_attempt_at IS NULL")
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_check_constraint(
            'deliveries_failed_has_next_attempt',
            "status <> 'failed' OR next_attempt_at IS NOT NULL")


def downgrade():
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_constraint('deliveries_failed_has_next_attempt', type_='check')
