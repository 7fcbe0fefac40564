"""Kill -9 during STOW-RS requests: a node never answers 200 (or names in its Referenced
SOP Sequence) an instance it did not keep.

One node (``dicom-ai-node serve``, SQLite, fsync on) and one sender token. Each cycle
POSTs a new study (one request, every slice a part) from a thread and SIGKILLs the node
at a random point of the request, chosen round-robin:

``stream``
    0-100 % of the time a request takes into it (mostly while the body streams in);
``commit``
    as soon as the study's first instance row is committed (the instances are being
    stored, the response not sent yet);
``answer``
    right after the response arrived (the kill lands after the answer: what it named
    must survive).

After each kill the node is restarted on the same storage and index; then every
instance a 2xx response named must be indexed with its file holding exactly the bytes
sent, no file may be without its row nor a row without its file, no temp file is left,
and re-POSTing the whole study (what a sender does without an answer) is 200 with all
of it kept and every file under its row.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydicom.dataset import Dataset

from dicom_ai_node.store import accounts
from dicom_ai_node.store.db import Database, utcnow
from dicom_ai_node.testing.series import make_ct_series

from ..conftest import NodeProcess, free_port, wait_for_port, write_node_config
from ..integration.stow_support import multipart, part10, post_stow, referenced_of
from .checks import NodeView, dataset_offset

__all__ = ["KILL_POINTS", "StowKillCycle", "run_stow_kills"]

KILL_POINTS = ("stream", "commit", "answer")
SENDER = "CRASHSTOW"
POLL_S = 0.002
EVENT_TIMEOUT_S = 60.0


@dataclass
class StowKillCycle:
    """What one cycle did and found."""

    point: str
    answered: int | None
    named: int
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        answer = "no answer" if self.answered is None else f"answered {self.answered}"
        return f"kill at {self.point}: {answer}, {self.named} instance(s) named; " + (
            "; ".join(self.problems) or "ok"
        )


def _check(view: NodeView, sent: dict[str, bytes], named: set[str], final: bool) -> list[str]:
    """Everything named is kept as sent, every row has its file, no temp file is left; and
    once the study was re-posted (``final``) every file has its row. Before that a kill
    between a file's rename and its index commit may leave the file alone (as with
    C-STORE): its sender got no answer and re-sends it, which indexes that very file."""
    problems = []
    rows = {uid: (path, sha) for uid, path, sha in view.instances()}
    problems += [f"{u} answered stored but not indexed" for u in sorted(named - set(rows))]
    for uid, (path, sha) in rows.items():
        file = view.storage / path
        if not file.is_file():
            problems.append(f"{uid}: indexed, file {path} missing")
            continue
        raw = file.read_bytes()
        if uid in sent and (
            raw[dataset_offset(raw) :] != sent[uid] or sha != hashlib.sha256(sent[uid]).hexdigest()
        ):
            problems.append(f"{uid}: stored bytes or hash differ from what was sent")
    orphans = view.files("instances") - {path for path, _ in rows.values()}
    problems += [f"file {p} on disk but not indexed" for p in sorted(orphans) if final]
    problems += [f"temp file tmp/{n} left over" for n in view.temp_files()]
    return problems


class _Post(threading.Thread):
    def __init__(self, url: str, token: str, body: bytes) -> None:
        super().__init__(name="stow-post", daemon=True)
        self.url, self.token, self.body = url, token, body
        self.answer: httpx.Response | None = None

    def run(self) -> None:
        try:
            self.answer = post_stow(self.url, self.token, self.body, timeout_s=EVENT_TIMEOUT_S)
        except httpx.HTTPError:
            self.answer = None


def _wait(predicate: object, timeout_s: float = EVENT_TIMEOUT_S) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the kill point never came")
        time.sleep(POLL_S)


def run_stow_kills(workdir: Path, cycles: int, seed: int) -> list[StowKillCycle]:
    """Run ``cycles`` kill cycles (see the module); each cycle's record."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{workdir / 'node.db'}"
    port, web_port = free_port(), free_port()
    config = write_node_config(workdir, db_url, port, [], quiet_s=30.0, web_port=web_port)
    db = Database(db_url)
    db.migrate()
    _, token = accounts.add_token(db.session, SENDER, "sender", None, "", utcnow())
    db.dispose()
    view = NodeView(workdir / "node.db", workdir / "storage")
    url = f"http://127.0.0.1:{web_port}"
    records: list[StowKillCycle] = []
    node: NodeProcess | None = None
    try:
        for index in range(cycles):
            node = NodeProcess(config, port, workdir / f"node-{index:03d}.log")
            node.start(90.0)
            wait_for_port(web_port, 30.0, node.proc)
            records.append(_cycle(index, rng, node, view, (url, web_port), token, seed))
            node.stop()
            node = None
    finally:
        if node is not None:
            node.kill()
    return records


def _study(seed: int, index: int) -> tuple[list[Dataset], dict[str, bytes], bytes]:
    _, datasets = make_ct_series(16, 128, 128, (2.5, 2.8, 2.8), seed=seed * 1000 + index)
    files = [part10(ds) for ds in datasets]
    sent = {
        str(ds.SOPInstanceUID): f[dataset_offset(f) :]
        for ds, f in zip(datasets, files, strict=True)
    }
    return datasets, sent, multipart(files)


def _cycle(
    index: int,
    rng: random.Random,
    node: NodeProcess,
    view: NodeView,
    web: tuple[str, int],
    token: str,
    seed: int,
) -> StowKillCycle:
    url, web_port = web
    point = KILL_POINTS[index % len(KILL_POINTS)]
    datasets, sent, body = _study(seed, index)
    study = str(datasets[0].StudyInstanceUID)
    post = _Post(url, token, body)
    started = time.monotonic()
    post.start()
    if point == "stream":
        time.sleep(rng.uniform(0.0, 0.3))
    elif point == "commit":
        _wait(lambda: bool(view.indexed_uids(study)) or not post.is_alive())
    else:
        post.join(EVENT_TIMEOUT_S)
    node.kill()
    post.join(EVENT_TIMEOUT_S)
    took = time.monotonic() - started
    answer = post.answer
    named = set(referenced_of(answer)) if answer is not None and answer.status_code < 300 else set()
    record = StowKillCycle(point, answer.status_code if answer is not None else None, len(named))
    if answer is not None and answer.status_code == 200 and named != set(sent):
        record.problems.append(f"200 naming {len(named)} of {len(sent)} instances")
    node.start(90.0)  # restart on the same storage: recovery sweeps temp files
    wait_for_port(web_port, 30.0, node.proc)
    record.problems += _check(view, sent, named, final=False)
    again = post_stow(url, token, body, timeout_s=EVENT_TIMEOUT_S)
    if again.status_code != 200 or set(referenced_of(again)) != set(sent):
        record.problems.append(f"re-POST after the restart answered {again.status_code}")
    record.problems += _check(view, sent, set(sent), final=True)
    record.problems = [f"cycle {index} (seed {seed}, {took:.2f} s): {p}" for p in record.problems]
    return record
