"""Kill -9 harness: a read-only view of the node's index and storage, and the invariants.

The view reads the node's SQLite file with the standard library (SELECT only, one short
connection per query, so the harness never holds a lock the node waits for) and walks
the storage root. The invariants are those of ``docs/reliability.md``:

1. every instance answered Success is indexed exactly once and its file holds the data
   set byte for byte as it was sent; no temp file and no unindexed file is left over;
2. every study ends in a terminal state: each series routed or not routed, no job
   queued or running, no delivery pending, the newest job of each series done (or failed
   with a reason);
3. re-delivery is idempotent: each done job has one SEG and one SR, the destination got
   exactly those SOP Instance UIDs (however many times each arrived), every copy of a
   UID byte-identical, and no UID that no result row explains.
"""

from __future__ import annotations

import hashlib
import sqlite3
import struct
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .peers import Receipt

__all__ = [
    "NodeView",
    "SentStudy",
    "check_invariants",
    "landed_phase",
    "leftovers",
    "rerun_differences",
    "study_terminal",
    "unrecorded_results",
]

TERMINAL_JOB_STATES = frozenset({"done", "quality_failed", "failed", "superseded"})


@dataclass(frozen=True)
class SentStudy:
    """One study the harness sent: its UIDs and each instance's data set bytes as sent."""

    study_instance_uid: str
    series_instance_uid: str
    data: Mapping[str, bytes]  # SOP Instance UID -> data set bytes


def dataset_offset(head: bytes) -> int:
    """Where the data set starts in a Part 10 file: after preamble, prefix and file meta.

    The file meta group starts with its group length (0002,0000) UL, explicit VR little
    endian (PS3.10 7.1), so the offset is 132 + 12 + that length.
    """
    if head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a Part 10 file starting with its group length")
    (length,) = struct.unpack("<I", head[140:144])
    return 144 + int(length)


class NodeView:
    """What the node has on disk: its index (SQLite, read only) and its storage root."""

    def __init__(self, db_path: Path, storage: Path) -> None:
        self.db_path = db_path
        self.storage = storage

    def rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one SELECT on a short-lived connection."""
        conn = sqlite3.connect(self.db_path, timeout=10.0, isolation_level=None)
        try:
            return conn.execute(sql, tuple(params)).fetchall()
        finally:
            conn.close()

    def instances(self) -> list[tuple[str, str, str]]:
        """(SOP Instance UID, path, SHA-256) of every indexed instance."""
        return [(r[0], r[1], r[2]) for r in self.rows(_INSTANCES)]

    def indexed_uids(self, study_uid: str) -> set[str]:
        """The SOP Instance UIDs indexed for one study."""
        return {
            r[0] for r in self.rows(_INSTANCES + " WHERE st.study_instance_uid = ?", [study_uid])
        }

    def series(self, study_uid: str) -> list[tuple[str, str, int]]:
        """(Series Instance UID, state, generation) of a study's series."""
        return [
            (r[0], r[1], int(r[2]))
            for r in self.rows(
                "SELECT s.series_instance_uid, s.state, s.generation FROM series s "
                "JOIN study st ON s.study_fk = st.pk WHERE st.study_instance_uid = ?",
                [study_uid],
            )
        ]

    def jobs(self, study_uid: str) -> list[tuple[int, str, str, int, int, float | None]]:
        """(pk, state, reason, attempts, generation, duration) of a study's jobs."""
        return [
            (int(r[0]), r[1], r[2], int(r[3]), int(r[4]), r[5])
            for r in self.rows(
                "SELECT j.pk, j.state, j.reason, j.attempts, j.generation, j.duration_s "
                "FROM job j JOIN study st ON j.study_fk = st.pk "
                "WHERE st.study_instance_uid = ? ORDER BY j.pk",
                [study_uid],
            )
        ]

    def results(self) -> list[tuple[int, str, str, str, str]]:
        """(job pk, kind, SOP Instance UID, path, Study Instance UID) of every result."""
        return [
            (int(r[0]), r[1], r[2], r[3], r[4])
            for r in self.rows(
                "SELECT r.job_fk, r.kind, r.sop_instance_uid, r.path, st.study_instance_uid "
                "FROM result r JOIN job j ON r.job_fk = j.pk JOIN study st ON j.study_fk = st.pk"
            )
        ]

    def deliveries(self, study_uid: str) -> list[tuple[str, str, str]]:
        """(state, result SOP Instance UID, last error) of a study's deliveries."""
        return [
            (r[0], r[1], r[2])
            for r in self.rows(
                "SELECT d.state, r.sop_instance_uid, d.last_error FROM delivery d "
                "JOIN result r ON d.result_fk = r.pk JOIN job j ON r.job_fk = j.pk "
                "JOIN study st ON j.study_fk = st.pk WHERE st.study_instance_uid = ?",
                [study_uid],
            )
        ]

    def files(self, folder: str) -> set[str]:
        """Relative paths of the files under one folder of the storage root."""
        base = self.storage / folder
        if not base.is_dir():
            return set()
        return {p.relative_to(self.storage).as_posix() for p in base.rglob("*") if p.is_file()}

    def temp_files(self) -> list[str]:
        """Temp files of writes cut short (``tmp/*.part``; spare files are not temp files)."""
        return sorted(p.name for p in (self.storage / "tmp").glob("*.part"))


_INSTANCES = (
    "SELECT i.sop_instance_uid, i.path, i.sha256 FROM instance i "
    "JOIN series s ON i.series_fk = s.pk JOIN study st ON s.study_fk = st.pk"
)


def study_terminal(view: NodeView, study: SentStudy) -> bool:
    """Whether a study has reached its end: every instance in, nothing left to do."""
    if view.indexed_uids(study.study_instance_uid) != set(study.data):
        return False
    if any(
        state not in ("routed", "not_routed")
        for _, state, _ in view.series(study.study_instance_uid)
    ):
        return False
    jobs = view.jobs(study.study_instance_uid)
    if not jobs or any(j[1] not in TERMINAL_JOB_STATES for j in jobs):
        return False
    return all(d[0] != "pending" for d in view.deliveries(study.study_instance_uid))


def landed_phase(view: NodeView, study: SentStudy, acked: set[str]) -> str:
    """Where the study was when the node died, read from the database after the kill."""
    unacked = set(study.data) - acked
    if unacked:
        committed = view.indexed_uids(study.study_instance_uid)
        return "commit-response" if unacked & committed else "receive"
    states = {state for _, state, _ in view.series(study.study_instance_uid)}
    jobs = {j[1] for j in view.jobs(study.study_instance_uid)}
    if states & {"receiving", "complete"} or "queued" in jobs or not jobs:
        return "assembly"
    if "running" in jobs:
        return "inference"
    if any(d[0] == "pending" for d in view.deliveries(study.study_instance_uid)):
        return "sending"
    return "after"


def unrecorded_results(view: NodeView) -> dict[str, str]:
    """SHA-256 of each result file on disk whose job was not recorded (the kill came first)."""
    paths = view.files("results") - {r[3] for r in view.results()}
    return {p: hashlib.sha256((view.storage / p).read_bytes()).hexdigest() for p in paths}


def rerun_differences(view: NodeView, before: dict[str, str]) -> list[str]:
    """Result files a re-run wrote with other bytes than the run the kill cut short.

    Same job key, same UIDs: the objects must be identical too, or two runs of one job
    (a restart, or a lease taken over) could give a PACS two versions of one UID.
    """
    out = []
    for path, sha in sorted(before.items()):
        file = view.storage / path
        if file.is_file() and hashlib.sha256(file.read_bytes()).hexdigest() != sha:
            out.append(f"re-run wrote {path} with other bytes than the run before the kill")
    return out


def leftovers(view: NodeView) -> str:
    """What a kill left on disk for the next start: temp files, files without their row."""
    instances = len(view.files("instances") - {path for _, path, _ in view.instances()})
    results = len(view.files("results") - {r[3] for r in view.results()})
    counts = {
        "temp file(s)": len(view.temp_files()),
        "unindexed instance file(s)": instances,
        "unrecorded result file(s)": results,
    }
    return ", ".join(f"{n} {what}" for what, n in counts.items() if n) or "nothing"


def _check_instances(view: NodeView, studies: list[SentStudy]) -> list[str]:
    problems = []
    sent = {uid: data for s in studies for uid, data in s.data.items()}
    rows = view.instances()
    counts: dict[str, int] = defaultdict(int)
    for uid, _, _ in rows:
        counts[uid] += 1
    problems += [f"instance {u} indexed {n} times" for u, n in counts.items() if n != 1]
    problems += [f"instance {u} acknowledged but not indexed" for u in sent if u not in counts]
    problems += [f"instance {u} indexed but never sent" for u in counts if u not in sent]
    for uid, path, sha in rows:
        if uid not in sent:
            continue
        file = view.storage / path
        if not file.is_file():
            problems.append(f"instance {uid}: file {path} missing")
            continue
        raw = file.read_bytes()
        if raw[dataset_offset(raw) :] != sent[uid]:
            problems.append(f"instance {uid}: stored data set differs from the bytes sent")
        if sha != hashlib.sha256(sent[uid]).hexdigest():
            problems.append(f"instance {uid}: indexed hash differs from the bytes sent")
    orphans = view.files("instances") - {path for _, path, _ in rows}
    problems += [f"file {p} on disk but not indexed" for p in sorted(orphans)]
    problems += [f"temp file tmp/{name} left over" for name in view.temp_files()]
    return problems


def _check_study(view: NodeView, study: SentStudy) -> list[str]:
    uid = study.study_instance_uid
    problems = []
    for series_uid, state, _ in view.series(uid):
        if state not in ("routed", "not_routed"):
            problems.append(f"study {uid}: series {series_uid} left {state}")
    jobs = view.jobs(uid)
    if not jobs:
        problems.append(f"study {uid}: no job")
    for pk, state, reason, _, _, _ in jobs:
        if state not in TERMINAL_JOB_STATES:
            problems.append(f"study {uid}: job {pk} left {state}")
        elif state in ("failed", "quality_failed") and not reason:
            problems.append(f"study {uid}: job {pk} {state} without a reason")
    newest = max(jobs, key=lambda j: (j[4], j[0])) if jobs else None
    if newest is not None and newest[1] != "done":
        problems.append(f"study {uid}: newest job {newest[0]} ended {newest[1]}: {newest[2]}")
    for state, sop_uid, error in view.deliveries(uid):
        if state != "delivered":
            problems.append(f"study {uid}: delivery of {sop_uid} {state} ({error})")
    return problems


def _check_results(view: NodeView, receipts: list[Receipt], done_jobs: set[int]) -> list[str]:
    problems = []
    results = view.results()
    by_job: dict[int, list[str]] = defaultdict(list)
    for job_pk, kind, _, _, _ in results:
        by_job[job_pk].append(kind)
    for job_pk in sorted(done_jobs | set(by_job)):  # superseded jobs may have results too
        if sorted(by_job.get(job_pk, [])) != ["SEG", "SR"]:
            problems.append(f"job {job_pk}: results {sorted(by_job.get(job_pk, []))}, not SEG + SR")
    known = {uid for _, _, uid, _, _ in results}
    hashes: dict[str, set[str]] = defaultdict(set)
    for r in receipts:
        hashes[r.sop_instance_uid].add(r.sha256)
    problems += [
        f"destination got {u}, which no result row explains" for u in hashes if u not in known
    ]
    problems += [
        f"destination got {u} with {len(h)} different contents"
        for u, h in hashes.items()
        if len(h) > 1
    ]
    problems += [
        f"result {u} (job {j}) never reached the destination"
        for j, _, u, _, _ in results
        if u not in hashes
    ]
    orphans = view.files("results") - {path for _, _, _, path, _ in results}
    problems += [f"result file {p} on disk without a result row" for p in sorted(orphans)]
    return problems


def check_invariants(
    view: NodeView, studies: list[SentStudy], receipts: list[Receipt]
) -> list[str]:
    """Every violation of the invariants, over every study sent so far (empty: all kept)."""
    problems = _check_instances(view, studies)
    done_jobs: set[int] = set()
    for study in studies:
        problems += _check_study(view, study)
        done_jobs |= {j[0] for j in view.jobs(study.study_instance_uid) if j[1] == "done"}
    return problems + _check_results(view, receipts, done_jobs)
