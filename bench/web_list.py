"""Bench: the operator's job list with 100,000 jobs in SQLite (issue 16, acceptance 5).

:func:`seed_jobs` fills a fresh index (the node's own migrations) through SQLAlchemy
Core bulk inserts, in the proportions of a busy node: about 2.5 jobs per study, three
series per study, most jobs done with a SEG and an SR each delivered to one destination
(some to two), a few failed, quality-failed, superseded, queued or running; eight
models, one of them rare; a PACS that forwards 60 % of the studies, eighteen
modalities and one rare sender; two history lines per job. Instances: one row per
series (no list reads that table; a real node has hundreds per series).

Then :func:`~dicom_ai_node.store.views.list_jobs` answers each case ``--repeat`` times
(first page of 50, unless the case says otherwise) and the bench prints p50/p95 in ms
and the ratio of each p95 to the p95 of a reference measured in the same run: a bare
``SELECT pk FROM job ORDER BY pk DESC LIMIT 50`` on the same database. The studies list
(:func:`~dicom_ai_node.store.views.list_studies`) is held to the same limit; the status,
failures and destinations reads are timed for information, a tenth as often. The exit
status is 1 when a list case's p95 is 300 ms or more.

Usage::

    python bench/web_list.py [--jobs 100000] [--repeat 200] [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert, text

from dicom_ai_node.domain import DeliveryState, JobState, SeriesState
from dicom_ai_node.store.db import Database, Sessions
from dicom_ai_node.store.tables import (
    Delivery,
    Event,
    Instance,
    Job,
    Patient,
    Result,
    Series,
    Study,
)
from dicom_ai_node.store.views import list_jobs, list_studies

#: The p95 a list case must stay under (acceptance 5 of issue 16).
LIMIT_MS = 300.0
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
MODELS = (
    "ct-chest-lungs",
    "ct-kidney-tumour",
    "cxr-abnormal",
    "body-region",
    "mr-brain",
    "us-thyroid",
    "mg-density",
    "rare-model",  # about 0.3 % of the jobs
)
MODEL_WEIGHTS = (30, 15, 25, 10, 8, 6, 5.7, 0.3)
SENDERS = ("PACS_FWD", *(f"MODALITY{i:02d}" for i in range(18)), "RARE_AE")
SENDER_WEIGHTS = (60.0, *(40.0 / 18,) * 18, 0.1)
DESTINATIONS = ("PACS@10.0.0.5:104", "ARCHIVE@10.0.0.6:11112")
#: Job states with their shares of all jobs.
STATES = (
    (JobState.DONE, 85.0),
    (JobState.FAILED, 5.0),
    (JobState.QUALITY_FAILED, 3.0),
    (JobState.SUPERSEDED, 4.0),
    (JobState.QUEUED, 2.0),
    (JobState.RUNNING, 1.0),
)
FAILURES = (
    "model ct-chest-lungs failed: RuntimeError: out of memory",
    "gave up after 3 starts that did not finish (the node or its worker stopped while "
    "running it each time)",
    "cannot read the series: 12 of 300 files missing",
)
BATCH = 5000
#: A timed case: its name, the call, and whether :data:`LIMIT_MS` holds it.
Case = tuple[str, Callable[[], object], bool]


def _table(cls: Any) -> Table:
    table = cls.__table__
    assert isinstance(table, Table)
    return table


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class _Plan:
    """The random choices of one seeding: a state and model per job, a sender per study."""

    n: int
    studies: int
    patients: int
    states: Sequence[JobState]
    models: Sequence[str]
    senders: Sequence[str]
    rng: random.Random

    def at(self, i: int, total: int) -> dt.datetime:
        """The i-th of ``total`` moments spread over 30 days."""
        return T0 + dt.timedelta(seconds=30 * 24 * 3600 * i / max(1, total))

    def study_of(self, job: int) -> int:
        return 1 + (job - 1) * self.studies // self.n


def _patients(p: _Plan) -> Iterator[dict[str, Any]]:
    for i in range(1, p.patients + 1):
        yield {"pk": i, "patient_id": f"P{i:08d}", "patient_name": f"NAME^{i}"}


def _studies(p: _Plan) -> Iterator[dict[str, Any]]:
    for i in range(1, p.studies + 1):
        when = p.at(i, p.studies)
        yield {
            "pk": i,
            "study_instance_uid": f"1.2.826.0.1.16.{i}",
            "patient_fk": 1 + (i - 1) % p.patients,
            "study_date": f"{when:%Y%m%d}",
            "study_description": "CT CHEST",
            "accession_number": f"A{i:09d}",
            "created_at": when,
        }


def _series(p: _Plan) -> Iterator[dict[str, Any]]:
    for i in range(1, 3 * p.studies + 1):
        study = 1 + (i - 1) // 3
        when = p.at(study, p.studies)
        yield {
            "pk": i,
            "series_instance_uid": f"1.2.826.0.1.16.{study}.{i}",
            "study_fk": study,
            "modality": "CT",
            "series_number": i % 3 + 1,
            "calling_ae_title": p.senders[study - 1],
            "header": {"Modality": "CT"},
            "instance_count": 300,
            "first_received_at": when,
            "last_received_at": when,
            "state": SeriesState.ROUTED.value,
            "completed_at": when,
        }


def _instances(p: _Plan) -> Iterator[dict[str, Any]]:
    for i in range(1, 3 * p.studies + 1):
        yield {
            "pk": i,
            "sop_instance_uid": f"1.2.826.0.1.16.9.{i}",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
            "series_fk": i,
            "transfer_syntax_uid": "1.2.840.10008.1.2.1",
            "path": f"studies/{i}.dcm",
            "size": 524288,
            "sha256": "0" * 64,
            "calling_ae_title": p.senders[(i - 1) // 3],
            "received_at": p.at(1 + (i - 1) // 3, p.studies),
        }


def _jobs(p: _Plan) -> Iterator[dict[str, Any]]:
    for i in range(1, p.n + 1):
        study = p.study_of(i)
        series_pk = 3 * (study - 1) + 1 + i % 3
        when = p.at(i, p.n)
        state = p.states[i - 1]
        failed = state in (JobState.FAILED, JobState.QUALITY_FAILED)
        yield {
            "pk": i,
            "job_key": f"{p.models[i - 1]}/1.0.0/series/{series_pk}/r{i}",
            "study_fk": study,
            "series_fk": series_pk,
            "model_name": p.models[i - 1],
            "model_version": "1.0.0",
            "state": state.value,
            "reason": p.rng.choice(FAILURES) if failed else "2 objects encoded",
            "explanation": {"routing": [], "series": [], "selection": []},
            "attempts": 1,
            "created_at": when,
            "updated_at": when + dt.timedelta(seconds=20),
            "duration_s": 4.2,
            "subject": f"series/{series_pk}",
            "revision": 0,
            "input_key": f"{series_pk}@g0",
        }


def _results(p: _Plan) -> Iterator[dict[str, Any]]:
    pk = 0
    for i in range(1, p.n + 1):
        if p.states[i - 1] not in (JobState.DONE, JobState.SUPERSEDED):
            continue
        for kind in ("SEG", "SR"):
            pk += 1
            yield {
                "pk": pk,
                "job_fk": i,
                "kind": kind,
                "sop_instance_uid": f"1.2.826.0.1.16.8.{pk}",
                "sop_class_uid": "1.2.840.10008.5.1.4.1.1.66.4",
                "series_instance_uid": f"1.2.826.0.1.16.7.{i}",
                "path": f"results/{pk}.dcm",
                "created_at": p.at(i, p.n),
            }


def _deliveries(p: _Plan, results: int) -> Iterator[dict[str, Any]]:
    """Each result to the PACS, one in five to the archive too; 2 % pending, 1 % failed."""
    pk = 0
    for result in range(1, results + 1):
        for d, dest in enumerate(DESTINATIONS):
            if d and result % 5:
                continue
            pk += 1
            roll = p.rng.random()
            state = DeliveryState.DELIVERED
            if roll < 0.03:
                state = DeliveryState.PENDING if roll < 0.02 else DeliveryState.FAILED
            when = T0 + dt.timedelta(seconds=result)
            delivered = state is DeliveryState.DELIVERED
            yield {
                "pk": pk,
                "result_fk": result,
                "destination": dest,
                "state": state.value,
                "attempts": 1,
                "next_attempt_at": when,
                "deadline_at": when + dt.timedelta(hours=24),
                "last_status": 0 if delivered else None,
                "last_error": "" if delivered else "connection refused",
                "delivered_at": when if delivered else None,
                "last_attempt_at": when,
            }


def _events(p: _Plan) -> Iterator[dict[str, Any]]:
    for i in range(1, p.n + 1):
        for kind in ("routed", f"job-{p.states[i - 1].value}"):
            yield {
                "at": p.at(i, p.n),
                "study_instance_uid": f"1.2.826.0.1.16.{p.study_of(i)}",
                "series_instance_uid": "",
                "kind": kind,
                "message": f"job {i}: {p.models[i - 1]}",
            }


def seed_jobs(database_url: str, n: int, seed: int = 16) -> dict[str, Any]:
    """Fill a new index at ``database_url`` with ``n`` jobs and what goes with them.

    Parameters
    ----------
    database_url:
        SQLAlchemy URL of an empty database (the schema is made here, by migration).
    n:
        Jobs to make.
    seed:
        Seed of the random choices: the same database for the same arguments.

    Returns
    -------
    dict[str, Any]
        Values to filter on: ``accessions`` (a sample of 50), ``model``, ``rare_model``,
        ``forwarder``, ``calling_ae`` (a modality), ``rare_ae``; and ``counts``, the rows
        made per table.
    """
    rng = random.Random(seed)
    studies = max(1, n * 2 // 5)
    plan = _Plan(
        n=n,
        studies=studies,
        patients=max(1, studies // 2),
        states=rng.choices([s for s, _ in STATES], [w for _, w in STATES], k=n),
        models=rng.choices(MODELS, MODEL_WEIGHTS, k=n),
        senders=rng.choices(SENDERS, SENDER_WEIGHTS, k=studies),
        rng=rng,
    )
    db = Database(database_url)
    db.migrate()
    counts: dict[str, int] = {}
    steps: Sequence[tuple[Any, Callable[[], Iterator[dict[str, Any]]]]] = (
        (Patient, lambda: _patients(plan)),
        (Study, lambda: _studies(plan)),
        (Series, lambda: _series(plan)),
        (Instance, lambda: _instances(plan)),
        (Job, lambda: _jobs(plan)),
        (Result, lambda: _results(plan)),
        (Delivery, lambda: _deliveries(plan, counts["result"])),
        (Event, lambda: _events(plan)),
    )
    with db.engine.begin() as conn:
        for cls, rows in steps:
            table = _table(cls)
            counts[table.name] = 0
            for batch in _chunks(rows()):
                conn.execute(insert(table), batch)
                counts[table.name] += len(batch)
        if db.is_sqlite:
            conn.exec_driver_sql("ANALYZE")
    db.dispose()
    return {
        "accessions": [f"A{rng.randint(1, studies):09d}" for _ in range(50)],
        "model": MODELS[0],
        "rare_model": MODELS[-1],
        "forwarder": SENDERS[0],
        "calling_ae": SENDERS[1],
        "rare_ae": SENDERS[-1],
        "counts": counts,
    }


def _time(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """p50 and p95 of ``repeat`` calls in ms (after one call not counted)."""
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def main(argv: Sequence[str] | None = None) -> int:
    """Seed, time and print; 1 when a list case is too slow."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="build the database in this folder, keep it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="web-list-") as tmp:
        folder = args.keep or Path(tmp)
        path = folder / "bench.db"
        path.unlink(missing_ok=True)
        start = time.perf_counter()
        seeded = seed_jobs(f"sqlite:///{path}", args.jobs)
        print(f"seeded in {time.perf_counter() - start:.1f} s: {seeded['counts']}")
        return _measure(f"sqlite:///{path}", seeded, args.repeat)


def _cases(sessions: Sessions, seeded: dict[str, Any], repeat: int) -> list[Case]:
    """The list cases: name, call, held to :data:`LIMIT_MS`."""
    accessions = iter(seeded["accessions"] * (repeat + 2) * 2)
    first = list_jobs(sessions)
    filters: list[tuple[str, dict[str, Any]]] = [
        ("no filter", {}),
        ("state=failed", {"state": "failed"}),
        ("state=queued", {"state": "queued"}),
        (f"model={seeded['model']}", {"model": seeded["model"]}),
        (f"model={seeded['rare_model']} (rare)", {"model": seeded["rare_model"]}),
        (f"calling_ae={seeded['forwarder']} (60 %)", {"calling_ae": seeded["forwarder"]}),
        (f"calling_ae={seeded['calling_ae']}", {"calling_ae": seeded["calling_ae"]}),
        (f"calling_ae={seeded['rare_ae']} (rare)", {"calling_ae": seeded["rare_ae"]}),
        ("state=failed, model", {"state": "failed", "model": seeded["model"]}),
    ]
    cases: list[Case] = [
        ("jobs: no filter, page 2", lambda: list_jobs(sessions, cursor=first.next_cursor), True),
        (
            "jobs: accession (one study)",
            lambda: list_jobs(sessions, accession=next(accessions)),
            True,
        ),
        ("studies: accession", lambda: list_studies(sessions, accession=next(accessions)), True),
        (
            "studies: no filter, with patient",
            lambda: list_studies(sessions, with_patient=True),
            True,
        ),
        (
            "studies: one week",
            lambda: list_studies(sessions, date_from="20260110", date_to="20260116"),
            True,
        ),
    ]
    for name, kw in filters:
        cases.append((f"jobs: {name}", partial(list_jobs, sessions, **kw), True))
        cases.append((f"studies: {name}", partial(list_studies, sessions, **kw), True))
    return sorted(cases, key=lambda c: c[0])


def _measure(url: str, seeded: dict[str, Any], repeat: int) -> int:
    from dicom_ai_node.store.overview import failures_by_cause, status_summary
    from dicom_ai_node.store.peers import destinations

    db = Database(url)
    sessions = db.session
    now = T0 + dt.timedelta(days=31)
    info: list[Case] = [
        ("status_summary", lambda: status_summary(sessions, now), False),
        ("failures_by_cause", lambda: failures_by_cause(sessions), False),
        ("destinations", lambda: destinations(sessions, now), False),
    ]

    def reference() -> None:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT pk FROM job ORDER BY pk DESC LIMIT 50")).all()

    _, ref95 = _time(reference, repeat)
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"reference (bare SELECT pk ... LIMIT 50): p95 {ref95:.2f} ms")
    print(f"{'case':44} {'p50 ms':>8} {'p95 ms':>8} {'p95/ref':>8}")
    slow = []
    for name, call, gated in _cases(sessions, seeded, repeat) + info:
        p50, p95 = _time(call, repeat if gated else max(5, repeat // 10))
        mark = "" if gated else "  (information)"
        print(f"{name:44} {p50:8.2f} {p95:8.2f} {p95 / ref95:8.1f}{mark}")
        if gated and p95 >= LIMIT_MS:
            slow.append(name)
    db.dispose()
    if slow:
        print(f"p95 at or over {LIMIT_MS:.0f} ms: {', '.join(slow)}")
        return 1
    print(f"every list case under {LIMIT_MS:.0f} ms at p95")
    return 0


if __name__ == "__main__":
    sys.exit(main())
