"""Wiring: a job's step: claim -> load -> run the model -> encode -> store results -> complete.

:class:`Pipeline` is what a worker runs, here in a thread of :mod:`.app`; it holds no
SQL (the store's functions do) and sends nothing (the outbox rows it leaves are the send
stage's work, :mod:`.send.deliver`). Nothing is kept in memory between jobs, so a
restart resumes from the database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset

from .domain import JobState, ModelOutput
from .encode import SourcePixels, device_uid, encode_profiles, encode_results
from .errors import EncodeError, InferenceError, StorageError
from .infer.lease import JOB_HEARTBEAT_S, JOB_LEASE_S, LeaseKeeper
from .infer.manifest import ModelManifest
from .infer.registry import ModelRegistry
from .infer.volume import Decode, load_volume, needs_codec, read_images
from .metrics import NodeMetrics
from .result_kinds import RESULT_KINDS
from .send.deliver import destinations_for, outbox_kinds
from .settings import NodeSettings
from .store.db import Database
from .store.files import FileStore
from .store.jobs import (
    ClaimedJob,
    NewResult,
    claim_job,
    complete_job,
    fail_job,
    instance_paths,
    renew_lease,
    replaced_reports,
)

__all__ = ["Pipeline", "result_kind"]

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """A job worker's step, wired once by the composition root.

    Parameters
    ----------
    settings:
        The ``infer`` limits and, for the outbox rows of each result, the ``send``
        section and the AE table (:func:`~dicom_ai_node.send.deliver.destinations_for`).
    db, files:
        The index (jobs, results, outbox) and the stored files.
    registry:
        The installed models.
    clock:
        Current UTC time.
    metrics:
        Where each job's outcome and the time of its stages (queue wait, load, infer,
        encode) are counted per model (a registry of its own when not given).
    """

    settings: NodeSettings
    db: Database
    files: FileStore
    registry: ModelRegistry
    clock: Callable[[], dt.datetime]
    #: Lease of a claimed job, and how often its worker renews it while it runs.
    job_lease_s: float = JOB_LEASE_S
    job_heartbeat_s: float = JOB_HEARTBEAT_S
    #: Decodes compressed images (in a separate process); None decodes in this one.
    decode: Decode | None = None
    metrics: NodeMetrics = field(default_factory=lambda: NodeMetrics(process=False))

    def __post_init__(self) -> None:
        self.metrics.add_models(self.registry.manifests)

    @contextmanager
    def _timed(self, stage: str, model: str) -> Iterator[None]:
        """Observe the time of the block as ``stage`` of ``model`` (when it ends well)."""
        started = time.monotonic()
        yield
        self.metrics.stage(stage, model, time.monotonic() - started)

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
        if job.attempts == 1:  # a job claimed again after a crash waited for other reasons
            # since it went into the queue: a retried job was made long before
            waited = (now - job.queued_at).total_seconds()
            self.metrics.stage("queue_wait", job.model_name, waited)
        started = time.monotonic()

        def renew() -> bool:
            return renew_lease(self.db.session, job, self.clock(), self.job_lease_s)

        with LeaseKeeper(renew, self.job_heartbeat_s, f"job {job.pk}") as lease:
            try:
                state, reason, results = self._execute(job)
            except (InferenceError, EncodeError, StorageError) as exc:
                log.error("job %s failed: %s", job.pk, exc)
                reason, state = str(exc), JobState.FAILED
                kept = lease.finish(lambda: fail_job(self.db.session, job, self.clock(), reason))
            except Exception as exc:
                log.exception("job %s crashed", job.pk)
                reason = f"internal error: {type(exc).__name__}: {exc}"
                state = JobState.FAILED
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
                        self._destinations(job),
                        self.settings.send.retry_window_s,
                        time.monotonic() - started,
                    )
                )
        if not kept:
            log.warning(
                "job %s: not recorded: its lease was lost (the job runs again) or it was "
                "cancelled meanwhile",
                job.pk,
            )
        self.metrics.job_finished(job.model_name, state.value if kept else "not_recorded")
        return True

    def _destinations(self, job: ClaimedJob) -> dict[str, tuple[str, ...]]:
        """Where the job's results go, each destination with the kinds it gets."""
        return outbox_kinds(self.settings, destinations_for(self.settings, job.calling_ae_title))

    def _load_series(self, job: ClaimedJob) -> list[Dataset]:
        paths = instance_paths(self.db.session, job.series_pk)
        return read_images(self.files.absolute(p) for p in paths)

    def _execute(self, job: ClaimedJob) -> tuple[JobState, str, list[NewResult]]:
        manifest = self.registry.manifests[job.model_name]
        with self._timed("load", job.model_name):
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
            runner = self.registry.runner(manifest.name)  # loaded on first use: not timed
            with self._timed("infer", job.model_name):
                output = runner.postprocess(runner.predict(runner.preprocess(volume)), volume)
            if issues:
                output = dataclasses.replace(output, quality_issues=tuple(issues))
            state, reason = JobState.DONE, "results encoded"
        algorithm = manifest.algorithm(device_uid(manifest.name, manifest.version))
        kinds = {k for wanted in self._destinations(job).values() for k in wanted}
        with self._timed("encode", job.model_name):
            # content date/time fixed by the job, so a re-run re-creates identical objects
            common: dict[str, Any] = {
                "series_number": manifest.series_number,
                "content_datetime": job.created_at,
                "revision": job.revision,
                # only results replace results: a revision that could not analyse its
                # input leaves the earlier ones standing (store.jobs.complete_job)
                "predecessors": self._replaced(job) if state is JobState.DONE else (),
            }
            datasets = encode_results(ordered, output, algorithm, job.job_key, **common)
            datasets += encode_profiles(
                kinds,
                ordered,
                output,
                algorithm,
                job.job_key,
                pixels=self._source_pixels(ordered),
                reports=[ds for ds in datasets if result_kind(str(ds.SOPClassUID)) == "SR"],
                card_summary=card_summary(manifest),
                **common,
            )
            results = [self._store_result(ds) for ds in datasets]
        return state, reason, results

    def _source_pixels(self, ordered: Sequence[Dataset]) -> SourcePixels:
        """Stored pixel values of ``ordered[index]``, read again from its file.

        The volume loader dropped each image's Pixel Data; the key images need a few of
        them back. Compressed images go through the job's decoder (the separate process,
        as the loader did), which gives the first frame's rescaled values (luminance for
        colour): those are turned back into stored values (PS3.3 C.11.1.1).
        """

        def pixels(index: int) -> npt.NDArray[np.generic]:
            filename = getattr(ordered[index], "filename", None)
            if not isinstance(filename, str):
                raise EncodeError(f"source image {index} has no file to read its pixels from")
            ds = dcmread(filename)
            meta = getattr(ds, "file_meta", None)
            ts = meta.get("TransferSyntaxUID") if meta is not None else None
            if self.decode is None or not needs_codec(ds) or not (ts and ts.is_compressed):
                stored: npt.NDArray[np.generic] = ds.pixel_array  # uncompressed: no codec runs
                return stored
            [values] = self.decode([ds])
            slope = float(ds.get("RescaleSlope", 1) or 1)
            intercept = float(ds.get("RescaleIntercept", 0) or 0)
            restored: npt.NDArray[np.int32] = np.rint((values - intercept) / slope).astype(np.int32)
            return restored

        return pixels

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
        return NewResult(
            kind=result_kind(str(ds.SOPClassUID)),
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            path=relative,
        )


def result_kind(sop_class_uid: str) -> str:
    """The kind of result object (``SEG``, ``SR``, ``SC``, ``KOS``, ``GSPS``, ``PDF``) of a
    SOP Class (:data:`~dicom_ai_node.result_kinds.RESULT_KINDS`).

    Raises
    ------
    EncodeError
        For a SOP Class no kind has: the encoders made something the outbox cannot name.
    """
    for kind in RESULT_KINDS.values():
        if sop_class_uid in kind.sop_class_uids:
            return kind.name
    raise EncodeError(f"result SOP Class {sop_class_uid} is none of the result kinds")


def card_summary(manifest: ModelManifest) -> str:
    """What a PDF report says about the model: name, version, what it does, its intended use
    (from its manifest, whose text the model card repeats)."""
    parts = [f"{manifest.name} {manifest.version}.", manifest.description, manifest.intended_use]
    return " ".join(p.strip() for p in parts if p.strip())
