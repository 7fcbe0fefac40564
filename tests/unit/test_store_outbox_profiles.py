"""Store: a job's outbox rows follow each destination's results (its result profile)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from dicom_ai_node.domain import JobState
from dicom_ai_node.errors import Conflict
from dicom_ai_node.result_kinds import RESULT_KINDS
from dicom_ai_node.send.deliver import destinations_for, outbox_kinds
from dicom_ai_node.settings import Destination, KnownAE, NodeSettings, SendSettings
from dicom_ai_node.store.db import Database
from dicom_ai_node.store.jobs import NewResult, claim_job, complete_job
from dicom_ai_node.store.resend import resend
from dicom_ai_node.store.tables import Delivery, Result

from .test_store_index import T0
from .test_store_jobs import db  # noqa: F401  (the fixture: one series, one queued job)

RESULTS = [
    NewResult(kind, f"1.2.9.{n}", RESULT_KINDS[kind].sop_class_uids[0], f"1.2.8.{n}", f"r/{n}")
    for n, kind in enumerate(RESULT_KINDS, start=1)
]


def _rows(database: Database) -> set[tuple[str, str]]:
    with database.session() as session:
        query = select(Delivery.destination, Result.kind).join(
            Result, Delivery.result_fk == Result.pk
        )
        return {(dest, kind) for dest, kind in session.execute(query)}


def test_each_destination_gets_rows_only_for_the_kinds_it_wants(db: Database) -> None:  # noqa: F811
    settings = NodeSettings(
        ae_table=(KnownAE(ae_title="MOD", host="h", port=1),),  # the default: SEG and SR
        send=SendSettings(
            destinations=(
                Destination("VIEWER@h:2", results=("SC",)),
                Destination(
                    "https://p/dicom-web", protocol="dicomweb", results=("SR", "SC", "KOS")
                ),
            )
        ),
    )
    job = claim_job(db.session, T0, 60.0, ["m"])
    assert job is not None
    kinds = outbox_kinds(settings, destinations_for(settings, "MOD"))
    assert complete_job(db.session, job, T0, JobState.DONE, "ok", RESULTS, kinds, 60.0, 1.0)
    assert _rows(db) == {
        ("MOD@h:1", "SEG"),
        ("MOD@h:1", "SR"),
        ("VIEWER@h:2", "SC"),
        ("https://p/dicom-web", "SR"),
        ("https://p/dicom-web", "SC"),
        ("https://p/dicom-web", "KOS"),
    }
    with db.session() as session:  # every result is indexed, wanted or not
        assert len(session.scalars(select(Result)).all()) == len(RESULT_KINDS)


def test_a_plain_list_of_destinations_gets_every_result(db: Database) -> None:  # noqa: F811
    job = claim_job(db.session, T0, 60.0, ["m"])
    assert job is not None
    later = T0 + dt.timedelta(seconds=1)
    assert complete_job(db.session, job, later, JobState.DONE, "ok", RESULTS, ["D@h:1"], 9.0, 1.0)
    assert _rows(db) == {("D@h:1", kind) for kind in RESULT_KINDS}


def test_a_resend_follows_the_destination_s_results(db: Database) -> None:  # noqa: F811
    job = claim_job(db.session, T0, 60.0, ["m"])
    assert job is not None
    assert complete_job(db.session, job, T0, JobState.DONE, "ok", RESULTS, {}, 60.0, 1.0)
    later = T0 + dt.timedelta(seconds=1)
    # a job's results: only the kinds the destination gets
    assert resend(db.session, "V@h:2", "op", later, 60.0, job_pk=job.pk, kinds=("SC",)) == 1
    assert _rows(db) == {("V@h:2", "SC")}
    # one result of a kind it does not get: refused, nothing queued
    with db.session() as session:
        pdf = session.scalars(select(Result.pk).where(Result.kind == "PDF")).one()
    with pytest.raises(Conflict, match="does not get PDF"):
        resend(db.session, "V@h:2", "op", later, 60.0, result_pk=pdf, kinds=("SC",))
    assert _rows(db) == {("V@h:2", "SC")}
    # without kinds (the store's callers before profiles): every result
    assert resend(db.session, "W@h:3", "op", later, 60.0, job_pk=job.pk) == len(RESULT_KINDS)
