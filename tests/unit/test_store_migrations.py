"""Store: the migrations build exactly the tables the code declares, and an index made before
job revisions upgrades with its jobs' subjects and inputs filled in (SQLite and PostgreSQL)."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text

from dicom_ai_node.store.db import MIGRATIONS, Database
from dicom_ai_node.store.tables import Base


def test_migrated_schema_is_the_declared_one(db_url: str) -> None:
    db = Database(db_url)
    db.migrate()
    with db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    db.dispose()
    assert differences == []


def test_jobs_made_before_revisions_get_their_subject_and_input(db_url: str) -> None:
    db = Database(db_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection_engine"] = db.engine
    command.upgrade(cfg, "0001")
    with db.engine.begin() as conn:
        for statement in (
            "INSERT INTO patient (pk, patient_id, issuer_of_patient_id, patient_name) "
            "VALUES (1, '', '', '')",
            "INSERT INTO study (pk, study_instance_uid, patient_fk, study_date, "
            "study_description, accession_number, created_at) "
            "VALUES (1, '1.2', 1, '', '', '', '2026-01-01 00:00:00')",
            "INSERT INTO series (pk, series_instance_uid, study_fk, modality, "
            "series_description, calling_ae_title, header, instance_count, first_received_at, "
            "last_received_at, state, generation, late_instances, reason) VALUES (1, '1.2.3', "
            "1, 'CT', '', '', '{}', 1, '2026-01-01', '2026-01-01', 'routed', 0, 0, '')",
            "INSERT INTO job (pk, job_key, study_fk, series_fk, model_name, model_version, "
            "generation, state, reason, explanation, attempts, created_at, updated_at) VALUES "
            "(1, 'm/1/1.2.3/g2', 1, 1, 'm', '1', 2, 'done', '', '{}', 1, '2026-01-01', "
            "'2026-01-01'), (2, 's/1/study/1.2', 1, 1, 's', '1', 0, 'done', '', '{}', 1, "
            "'2026-01-01', '2026-01-01')",
        ):
            conn.execute(text(statement))
    db.migrate()
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT subject, revision, input_key FROM job ORDER BY pk"))
        found = [tuple(row) for row in rows]
    db.dispose()
    assert found == [("series/1.2.3", 0, "1.2.3@g2"), ("study/1.2", 0, "")]
