"""the operator's window: web accounts, associations, pauses, job list indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09 09:00:00

Adds the web service's accounts (users, API tokens and sessions, their secrets only as
hashes), the history of associations, the models and destinations an operator paused,
the time of each delivery's last attempt and how many times an operator sent it again,
and the indexes the operator's job and study lists read by (state, model, calling AE
title, accession number; newest first).
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('web_user',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('username')
    )
    op.create_table('api_token',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('web_session',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('session_hash', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('session_hash')
    )
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.create_index('ix_web_session_username', ['username'], unique=False)
        batch_op.create_index('ix_web_session_expires_at', ['expires_at'], unique=False)

    op.create_table('association',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('calling_ae_title', sa.String(length=16), nullable=False),
    sa.Column('called_ae_title', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('instances', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('pk')
    )
    op.create_table('pause',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('paused_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('kind', 'name')
    )
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('resends', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_index('ix_delivery_destination_attempt', ['destination', 'last_attempt_at'], unique=False)
        batch_op.create_index('ix_delivery_destination_state', ['destination', 'state'], unique=False)
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.create_index('ix_job_state_pk', ['state', 'pk'], unique=False)
        batch_op.create_index('ix_job_model_pk', ['model_name', 'pk'], unique=False)
    with op.batch_alter_table('study', schema=None) as batch_op:
        batch_op.create_index('ix_study_accession_number', ['accession_number'], unique=False)
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.create_index('ix_series_calling_ae_title', ['calling_ae_title'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_index('ix_series_calling_ae_title')
    with op.batch_alter_table('study', schema=None) as batch_op:
        batch_op.drop_index('ix_study_accession_number')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_model_pk')
        batch_op.drop_index('ix_job_state_pk')
    with op.batch_alter_table('delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_destination_state')
        batch_op.drop_index('ix_delivery_destination_attempt')
        batch_op.drop_column('resends')
        batch_op.drop_column('last_attempt_at')
    op.drop_table('pause')
    op.drop_table('association')
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.drop_index('ix_web_session_expires_at')
        batch_op.drop_index('ix_web_session_username')
    op.drop_table('web_session')
    op.drop_table('api_token')
    op.drop_table('web_user')
