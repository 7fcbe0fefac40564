"""job subjects and revisions: one result set per (study, model)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 09:00:00

Jobs made before this revision become revision 0 of their subject: the study for a
study-scope job, else the series they ran on, at their generation (their input). The
node's routing takes such a series job as the predecessor of a study-level one, so a
study decided again after the upgrade makes a revision of it only when the input
differs.
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
    # a study-scope job's key was <model>/<version>/study/<study uid>; the others ran on
    # one series at one generation, which is their input
    op.execute(
        "UPDATE job SET "
        "subject = CASE WHEN job_key LIKE '%/study/%' "
        "THEN 'study/' || (SELECT study.study_instance_uid FROM study WHERE study.pk = job.study_fk) "
        "ELSE 'series/' || (SELECT series.series_instance_uid FROM series WHERE series.pk = job.series_fk) END, "
        "input_key = CASE WHEN job_key LIKE '%/study/%' THEN '' "
        "ELSE (SELECT series.series_instance_uid FROM series WHERE series.pk = job.series_fk) "
        "|| '@g' || CAST(job.generation AS VARCHAR) END"
    )


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_subject')
        batch_op.drop_constraint('fk_job_predecessor_fk_job', type_='foreignkey')
        batch_op.drop_column('input_key')
        batch_op.drop_column('predecessor_fk')
        batch_op.drop_column('revision')
        batch_op.drop_column('subject')
