"""The pipeline steps that join the stages: complete -> route -> infer -> encode -> outbox -> send.

Each step is one short function over the database that a loop in :mod:`.app` (or a
Celery task in a scaled-out deployment) calls with the current time. Nothing is kept in
memory between steps, so a restart resumes from the database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import SegmentationStorage

from .assemble.sweep import Assembler
from .domain import BodyPart, JobState, ModelOutput, SeriesInfo
from .encode import device_uid, encode_results
from .errors import ConfigError, DeliveryError, EncodeError, InferenceError, StorageError
from .infer.lease import JOB_HEARTBEAT_S, JOB_LEASE_S, LeaseKeeper
from .infer.registry import ModelRegistry
from .infer.volume import Decode, load_volume, read_images
from .route.bodypart import BodyRegionClassifier
from .route.rules import RuleSet
from .send.retry import RetryPolicy
from .send.scu import Peer, send_datasets
from .settings import NodeSettings
from .store.db import Database
from .store.files import FileStore
from .store.jobs import (
    ClaimedJob,
    DueDelivery,
    NewResult,
    claim_job,
    complete_job,
    due_deliveries,
    fail_job,
    finish_delivery_attempt,
    instance_paths,
    renew_lease,
    replaced_reports,
)
from .store.routing import series_pk_of

if TYPE_CHECKING:
    from .infer.bodyregion import BodyRegionModels

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """Everything the steps need, wired once by the composition root."""

    settings: NodeSettings
    db: Database
    files: FileStore
    registry: ModelRegistry
    rules: RuleSet
    clock: Callable[[], dt.datetime]
    classifier: BodyRegionClassifier | None = None
    #: Told the destination and delivery keys of each attempt's deliveries (the audit trail).
    on_delivered: Callable[[str, list[int]], None] | None = None
    #: Lease of a claimed job, and how often its worker renews it while it runs.
    job_lease_s: float = JOB_LEASE_S
    job_heartbeat_s: float = JOB_HEARTBEAT_S
    #: The client context for destinations marked ``tls`` in the AE table.
    tls_client: ssl.SSLContext | None = None
    #: Decodes compressed images (in a separate process); None decodes in this one.
    decode: Decode | None = None
    #: The image-based body-region model, asked (as ``classifier``) when the headers do
    #: not name a region; ignored when ``classifier`` is given.
    body_region: BodyRegionModels | None = None

    #: Answers of the body-region model by (series, instance count): routing a study
    #: asks about every series of it each time one of them completes.
    _regions: dict[tuple[str, int], tuple[BodyPart, float] | None] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.classifier is None and self.body_region is not None:
            self.classifier = self.classify_region
        cfg = self.settings.assemble
        self.assembler = Assembler(
            self.db,
            self.rules,
            self.registry.specs,
            {m.name: m.version for m in self.registry},
            cfg.quiet_period_s,
            cfg.study_quiet_period_s,
            cfg.late_instance_policy,
            self.classifier,
        )

    def classify_region(self, info: SeriesInfo) -> tuple[BodyPart, float] | None:
        """The body region of a stored series from its pixels (the router's hook).

        Remembered per series and instance count (the model is deterministic), so a
        study's other series are not read again each time one of its series completes.
        """
        model = self.body_region
        if model is None or not model.accepts(info.modality):
            return None
        key = (info.series_instance_uid, info.number_of_instances)
        if key not in self._regions:
            if len(self._regions) >= 1024:
                self._regions.clear()
            self._regions[key] = self._classify_stored(model, info)
        return self._regions[key]

    def _classify_stored(
        self, model: BodyRegionModels, info: SeriesInfo
    ) -> tuple[BodyPart, float] | None:
        series_pk = series_pk_of(self.db.session, info.series_instance_uid)
        if series_pk is None:
            return None
        paths = [self.files.absolute(p) for p in instance_paths(self.db.session, series_pk)]
        return model.classify_files(paths, self.decode)

    # -- assemble + route ---------------------------------------------------------------
    def assemble(self) -> list[str]:
        """Complete series and studies whose time has come and make their jobs (one sweep)."""
        return self.assembler.sweep(self.clock())

    # -- infer + encode -------------------------------------------------------------------
    def run_one_job(self) -> bool:
        """Claim and run one job, renewing its lease while it runs; returns whether there was one.

        The job's final write is fenced by its claim: if the lease was lost meanwhile
        (this worker froze past it, or a restart re-queued the job), the run that holds
        the job now records it, with the same result UIDs.
        """
        now = self.clock()
        job = claim_job(self.db.session, now, self.job_lease_s, list(self.registry.manifests))
        if job is None:
            return False
        started = time.monotonic()

        def renew() -> bool:
            return renew_lease(self.db.session, job, self.clock(), self.job_lease_s)

        with LeaseKeeper(renew, self.job_heartbeat_s, f"job {job.pk}") as lease:
            try:
                state, reason, results = self._execute(job)
            except (InferenceError, EncodeError, StorageError) as exc:
                log.error("job %s failed: %s", job.pk, exc)
                reason = str(exc)
                kept = lease.finish(lambda: fail_job(self.db.session, job, self.clock(), reason))
            except Exception as exc:
                log.exception("job %s crashed", job.pk)
                reason = f"internal error: {type(exc).__name__}: {exc}"
                kept = lease.finish(lambda: fail_job(self.db.session, job, self.clock(), reason))
            else:
                kept = lease.finish(
                    lambda: complete_job(
                        self.db.session,
                        job,
                        self.clock(),
                        state,
                        reason,
                        results,
                        self.destinations(job.calling_ae_title),
                        self.settings.send.retry_window_s,
                        time.monotonic() - started,
                    )
                )
        if not kept:
            log.warning("job %s: not recorded, its lease was lost (the job runs again)", job.pk)
        return True

    def _load_series(self, job: ClaimedJob) -> list[Dataset]:
        paths = instance_paths(self.db.session, job.series_pk)
        return read_images(self.files.absolute(p) for p in paths)

    def _execute(self, job: ClaimedJob) -> tuple[JobState, str, list[NewResult]]:
        manifest = self.registry.manifests[job.model_name]
        volume, ordered, issues = load_volume(
            self._load_series(job),
            max_voxels=self.settings.infer.max_voxels,
            decode=self.decode,
            release_pixels=True,  # the encoders read headers only
            projection=manifest.projection,
            require_calibration=manifest.require_calibration,
            cine=manifest.cine,
        )
        blocking = [i for i in issues if i.blocking]
        if volume is None or blocking:
            output = ModelOutput(labels=manifest.labels, quality_issues=tuple(issues))
            state = JobState.QUALITY_FAILED
            reason = "input quality check failed: " + "; ".join(
                i.message for i in blocking or issues
            )
        else:
            runner = self.registry.runner(manifest.name)
            output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
            if issues:
                output = dataclasses.replace(output, quality_issues=tuple(issues))
            state, reason = JobState.DONE, "results encoded"
        algorithm = manifest.algorithm(device_uid(manifest.name, manifest.version))
        # content date/time fixed by the job, so a re-run re-creates identical objects
        datasets = encode_results(
            ordered,
            output,
            algorithm,
            job.job_key,
            series_number=manifest.series_number,
            content_datetime=job.created_at,
            revision=job.revision,
            # only results replace results: a revision that could not analyse its input
            # leaves the earlier ones standing (store.jobs.complete_job)
            predecessors=self._replaced(job) if state is JobState.DONE else (),
        )
        return state, reason, [self._store_result(ds) for ds in datasets]

    def _replaced(self, job: ClaimedJob) -> list[Dataset]:
        """The SR documents a revision replaces (their headers)."""
        return [
            dcmread(self.files.absolute(p), stop_before_pixels=True, defer_size=1024)
            for p in replaced_reports(self.db.session, job.predecessor_pk)
        ]

    def _store_result(self, ds: Dataset) -> NewResult:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        relative = self.files.result_path(
            str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        )
        self.files.write(relative, buffer.getvalue())
        kind = "SEG" if ds.SOPClassUID == SegmentationStorage else "SR"
        return NewResult(
            kind=kind,
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            path=relative,
        )

    def destinations(self, calling_ae_title: str) -> list[str]:
        """Where a study's results go: its sender (if in the AE table) plus configured extras."""
        out = []
        known = self.settings.known_ae(calling_ae_title)
        if self.settings.send.default_to_sender and known is not None and known.send_results:
            out.append(f"{known.ae_title}@{known.host}:{known.port}")
        out += [d for d in self.settings.send.destinations if d not in out]
        return out

    # -- send ------------------------------------------------------------------------------
    def deliver(self, destination: str | None = None) -> int:
        """Send every due delivery (of one destination, or all); returns how many were tried.

        Each destination gets one association attempt for its due results (PS3.4 Annex
        B); the node calls this once per destination in a thread of its own
        (:class:`~dicom_ai_node.send.senders.DestinationSenders`), so a destination that
        hangs until the timeout delays nobody else.
        """
        now = self.clock()
        due = due_deliveries(self.db.session, now, destination)
        by_dest: dict[str, list[DueDelivery]] = {}
        for d in due:
            by_dest.setdefault(d.destination, []).append(d)
        for dest, items in by_dest.items():
            self._deliver_to(dest, items)
        return len(due)

    def _wants_tls(self, peer: Peer) -> bool:
        """Whether the AE table marks this destination (title, host and port) for TLS."""
        return any(
            e.tls and (e.ae_title, e.host, e.port) == (peer.ae_title, peer.host, peer.port)
            for e in self.settings.ae_table
        )

    def _deliver_to(self, dest: str, items: list[DueDelivery]) -> None:
        """One attempt for one destination; each row ends delivered, retried later or failed."""
        cfg = self.settings.send
        policy = RetryPolicy(cfg.retry_initial_s, cfg.retry_max_s)
        try:
            peer = Peer.parse(dest)
            outcomes = send_datasets(
                [self.files.absolute(d.path) for d in items],
                peer,
                calling_ae_title=cfg.calling_ae_title or self.settings.dicom.ae_title,
                timeout_s=cfg.timeout_s,
                tls=self.tls_client if self._wants_tls(peer) else None,
            )
            error = ""
        except (DeliveryError, ConfigError) as exc:  # the association failed: every item waits
            outcomes, error = [], str(exc)
        except Exception as exc:  # recorded on each row, so the window still ends it
            log.exception("delivery to %s failed unexpectedly", dest)
            outcomes, error = [], f"internal error: {type(exc).__name__}: {exc}"
        by_uid = {o.sop_instance_uid: o for o in outcomes}
        now = self.clock()
        failed: list[tuple[str, dt.datetime | None]] = []
        for d in items:
            o = by_uid.get(d.sop_instance_uid)
            delivered = bool(o and o.delivered)
            message = "" if delivered else (o.message if o else error or "not sent")
            retry_at = (
                None if delivered else policy.next_attempt(d.attempts + 1, now, d.deadline_at)
            )
            finish_delivery_attempt(
                self.db.session,
                d,
                now,
                delivered=delivered,
                status=o.status if o else None,
                error=message,
                next_attempt_at=retry_at,
            )
            if not delivered:
                failed.append((message, retry_at))
        done = [d.pk for d in items if (o := by_uid.get(d.sop_instance_uid)) and o.delivered]
        if done and self.on_delivered is not None:
            self.on_delivered(dest, done)
        if failed:
            message, retry_at = failed[0]
            when = f"next attempt {retry_at:%H:%M:%S} UTC" if retry_at else "retry window over"
            log.warning(
                "%d of %d result(s) not delivered to %s (%s): %s",
                len(failed),
                len(items),
                dest,
                when,
                message,
            )
