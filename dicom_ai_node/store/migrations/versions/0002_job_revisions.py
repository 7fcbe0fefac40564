"""job subjects and revisions: one result set per (study, model)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 09:00:00

Jobs made before this revision ran on one series each: their subject is that series,
they are revision 0 and their input is unknown (empty), so the first routing after the
upgrade makes a revision of them only when the input differs.
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subject', sa.String(length=80), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('revision', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('predecessor_fk', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('input_key', sa.Text(), nullable=False, server_default=''))
        batch_op.create_foreign_key('fk_job_predecessor_fk_job', 'job', ['predecessor_fk'], ['pk'])
        batch_op.create_index('ix_job_subject', ['subject', 'model_name'], unique=False)
    op.execute(
        "UPDATE job SET subject = 'series/' || "
        "(SELECT series.series_instance_uid FROM series WHERE series.pk = job.series_fk)"
    )


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_subject')
        batch_op.drop_constraint('fk_job_predecessor_fk_job', type_='foreignkey')
        batch_op.drop_column('input_key')
        batch_op.drop_column('predecessor_fk')
        batch_op.drop_column('revision')
        batch_op.drop_column('subject')
