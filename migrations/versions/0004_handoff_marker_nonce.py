"""handoff marker nonce: the PSA note's marker carries a random part no user can type

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:55:00

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('marker_nonce', sa.String(length=32), nullable=True))


def downgrade():
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.drop_column('marker_nonce')
