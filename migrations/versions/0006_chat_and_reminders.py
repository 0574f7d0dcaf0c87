"""chat channel and reminders: the account's chat webhook and escalation policy, the
handoff's reminded_at, and a delivery's purpose (the escalation, or its reminder)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 06:00:00

"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chat_provider', sa.String(length=16),
                                      server_default='none', nullable=False))
        batch_op.add_column(sa.Column('chat_secret', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('remind_after_minutes', sa.Integer(),
                                      server_default='15', nullable=False))
        batch_op.add_column(sa.Column(
            'remind_roles', postgresql.ARRAY(sa.String(length=16)),
            server_default=sa.text("'{owner,admin}'::varchar(16)[]"), nullable=False))
        batch_op.create_check_constraint('accounts_chat_provider_valid',
                                         "chat_provider IN ('none', 'teams', 'slack')")
        batch_op.create_check_constraint('accounts_remind_after_minutes_valid',
                                         'remind_after_minutes BETWEEN 0 AND 1440')
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reminded_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('handoffs_awaiting_reminder', 'handoffs', ['created_at'], unique=False,
                    postgresql_where=sa.text("intent = 'escalate' AND status = 'open' "
                                             "AND reminded_at IS NULL"))
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purpose', sa.String(length=16),
                                      server_default='escalation', nullable=False))
        batch_op.create_check_constraint('deliveries_purpose_valid',
                                         "purpose IN ('escalation', 'reminder')")
        batch_op.drop_constraint('deliveries_channel_valid', type_='check')
        batch_op.create_check_constraint(
            'deliveries_channel_valid', "channel IN ('email', 'psa', 'assessment', 'chat')")
        batch_op.drop_constraint('deliveries_one_per_recipient', type_='unique')
        batch_op.create_unique_constraint('deliveries_one_per_recipient',
                                          ['handoff_id', 'channel', 'recipient', 'purpose'])


def downgrade():
    op.execute("DELETE FROM deliveries WHERE channel = 'chat' OR purpose = 'reminder'")
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_constraint('deliveries_one_per_recipient', type_='unique')
        batch_op.create_unique_constraint('deliveries_one_per_recipient',
                                          ['handoff_id', 'channel', 'recipient'])
        batch_op.drop_constraint('deliveries_channel_valid', type_='check')
        batch_op.create_check_constraint('deliveries_channel_valid',
                                         "channel IN ('email', 'psa', 'assessment')")
        batch_op.drop_constraint('deliveries_purpose_valid', type_='check')
        batch_op.drop_column('purpose')
    op.drop_index('handoffs_awaiting_reminder', table_name='handoffs',
                  postgresql_where=sa.text("intent = 'escalate' AND status = 'open' "
                                           "AND reminded_at IS NULL"))
    with op.batch_alter_table('handoffs', schema=None) as batch_op:
        batch_op.drop_column('reminded_at')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_constraint('accounts_remind_after_minutes_valid', type_='check')
        batch_op.drop_constraint('accounts_chat_provider_valid', type_='check')
        batch_op.drop_column('remind_roles')
        batch_op.drop_column('remind_after_minutes')
        batch_op.drop_column('chat_secret')
        batch_op.drop_column('chat_provider')
