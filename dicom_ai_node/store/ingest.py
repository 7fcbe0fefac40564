"""Store: one received instance made durable and indexed, or nothing of it kept.

The sequence behind a C-STORE's Success (PS3.4 B.2.3): the bytes as received go to a
temp file (:meth:`Ingest.write_temp`), which :meth:`Ingest.store` fsyncs and renames to
its content-addressed path before indexing the instance in one committed transaction.
When either step fails nothing is left: no file (unless an earlier store had put the
same bytes there) and no row. The receive stage calls these and decides only the DIMSE
status from what they return or raise.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from ..errors import StorageError, StorageFullError
from .files import Chunk, FileStore, TempFile
from .index import IndexOutcome, InstanceRecord, SeriesAttrs, index_instance, record_event
from .locks import KeyedLocks

__all__ = ["Ingest", "InstanceAttrs", "NotStored", "TempWriter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceAttrs:
    """The instance-level values of one C-STORE data set (empty text when absent)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    instance_number: int | None


class NotStored(StorageError):
    """The file could not be made durable, or the instance not indexed: nothing was kept."""


def _instance_record(
    instance: InstanceAttrs,
    series: SeriesAttrs,
    *,
    transfer_syntax_uid: str,
    path: str,
    size: int,
    sha256: str,
    received_at: dt.datetime,
    calling_ae_title: str,
) -> InstanceRecord:
    """What the index keeps of a stored instance: its values plus where and how it came."""
    return InstanceRecord(
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        study_instance_uid=instance.study_instance_uid,
        series_instance_uid=instance.series_instance_uid,
        path=path,
        size=size,
        sha256=sha256,
        received_at=received_at,
        calling_ae_title=calling_ae_title,
        instance_number=instance.instance_number,
        series=series,
    )


class TempWriter:
    """A temp file written piece by piece, as an instance streams in (a STOW-RS part).

    Made by :meth:`Ingest.open_temp`; :meth:`finish` closes it and hands back the
    :class:`~.files.TempFile` that :meth:`Ingest.store` makes durable, :meth:`discard`
    removes it. Like every temp file it lives in ``tmp/`` as ``*.part``, so one left by
    a crash is removed at the next start (:meth:`~.files.FileStore.sweep_temp`).

    Raises
    ------
    StorageError
        From :meth:`write` when the file cannot be written (StorageFullError when the
        volume is full); the file is removed then.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{uuid.uuid4().hex}.part"
        self.size = 0
        try:
            self._fd: int | None = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise _write_error(exc) from exc

    def write(self, data: Chunk) -> None:
        """Append ``data``."""
        view = memoryview(data).cast("B")
        try:
            while view.nbytes:
                if self._fd is None:
                    raise StorageError("temp file already closed")
                done = os.write(self._fd, view)
                view = view[done:]
                self.size += done
        except OSError as exc:
            self.discard()
            raise _write_error(exc) from exc

    def finish(self) -> TempFile:
        """Close the file; what :meth:`Ingest.store` takes."""
        self._close()
        return TempFile(self.path, self.size)

    def discard(self) -> None:
        """Close and remove the file (harmless when done before)."""
        self._close()
        self.path.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _write_error(exc: OSError) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError("no space left on the storage volume")
    return StorageError(f"cannot write file: {exc.strerror}")


class Ingest:
    """Stores received instances: a temp file, made durable in place, then indexed.

    Parameters
    ----------
    files:
        Where instance files go.
    sessions:
        The index's session factory.
    clock:
        Returns the current UTC time (tests pass their own).
    late_policy:
        What an instance arriving after its series completed does
        (:func:`~.index.index_instance`): ``rerun`` or ``record``.
    """

    def __init__(
        self,
        files: FileStore,
        sessions: sessionmaker[Session],
        clock: Callable[[], dt.datetime],
        *,
        late_policy: str = "rerun",
    ) -> None:
        self.files = files
        self.sessions = sessions
        self.clock = clock
        self.late_policy = late_policy
        self._sop_locks = KeyedLocks()

    def check_free_space(self) -> None:
        """Raise :class:`~dicom_ai_node.errors.StorageFullError` below the free-space reserve."""
        self.files.check_free_space()

    def write_temp(self, chunks: Sequence[Chunk]) -> TempFile:
        """Write the bytes as received to a temp file, not yet durable.

        :meth:`store` or :meth:`discard` follows.

        Raises
        ------
        StorageError
            When the file cannot be written (StorageFullError when the volume is full).
        """
        return self.files.write_temp(chunks)

    def open_temp(self) -> TempWriter:
        """A temp file to write an instance into as it arrives (not yet durable).

        Raises
        ------
        StorageError
            When below the free-space reserve (StorageFullError) or the file cannot be
            made.
        """
        self.files.check_free_space()
        return TempWriter(self.files.tmp)

    def read_temp(self, temp: TempFile, limit: int) -> bytes:
        """The bytes of a temp file of at most ``limit`` bytes (checked before it is read).

        Raises
        ------
        StorageError
            When it is larger than ``limit`` or cannot be read.
        """
        if temp.size > limit:
            raise StorageError(f"temp file of {temp.size} bytes is over its bound of {limit}")
        try:
            with temp.path.open("rb") as fp:
                return fp.read(limit + 1)
        except OSError as exc:
            raise StorageError(f"cannot read temp file: {exc.strerror}") from exc

    def discard(self, temp: TempFile | None) -> None:
        """Remove the temp file (harmless once :meth:`store` has moved it away)."""
        if temp is not None:
            self.files.discard(temp)

    def store(
        self,
        temp: TempFile,
        sha256: str,
        instance: InstanceAttrs,
        series: SeriesAttrs,
        *,
        transfer_syntax_uid: str,
        calling_ae_title: str,
    ) -> IndexOutcome:
        """Make ``temp`` durable under its content-addressed path and index the instance.

        Two associations storing the same SOP Instance UID take turns. A file already at
        the path can only hold the same bytes, acknowledged before or left by a crash:
        it is never removed on a failure.

        Returns
        -------
        IndexOutcome
            NEW when durable and indexed; DUPLICATE when the same bytes were stored
            before (nothing changed); CONFLICT when other bytes were stored under this
            SOP Instance UID (the first ones are kept, the study's history says so).

        Raises
        ------
        NotStored
            When the file cannot be made durable or the index cannot commit; nothing
            of the instance is left.
        StorageError
            When its UIDs or hash cannot name a file (the temp file is removed).
        """
        study_uid, series_uid, sop_uid = (
            instance.study_instance_uid,
            instance.series_instance_uid,
            instance.sop_instance_uid,
        )
        try:
            relative = self.files.instance_path(study_uid, series_uid, sop_uid, sha256)
        except StorageError:
            self.files.discard(temp)
            raise
        with self._sop_locks.hold(sop_uid):
            # a file at this content-addressed path can only be the same bytes, already
            # acknowledged or orphaned by a crash: never delete it on a later failure
            ours = not self.files.absolute(relative).exists()
            try:
                size = self.files.commit(temp, relative)
            except StorageError as exc:  # includes StorageFullError
                raise NotStored(str(exc)) from exc
            record = _instance_record(
                instance,
                series,
                transfer_syntax_uid=transfer_syntax_uid,
                path=relative,
                size=size,
                sha256=sha256,
                received_at=self.clock(),
                calling_ae_title=calling_ae_title,
            )
            try:
                outcome = index_instance(self.sessions, record, late_policy=self.late_policy)
            except StorageError as exc:
                if ours:
                    self.files.remove(relative)
                raise NotStored(str(exc)) from exc
            if outcome is IndexOutcome.CONFLICT:
                if ours:
                    self.files.remove(relative)
                self._record_conflict(sop_uid, study_uid, series_uid)
            return outcome

    def _record_conflict(self, sop_uid: str, study_uid: str, series_uid: str) -> None:
        """A line in the study's history: the instance came again with other content."""
        try:
            with self.sessions.begin() as session:
                record_event(
                    session,
                    self.clock(),
                    study_uid,
                    "conflict",
                    f"instance {sop_uid} re-sent with different content; first one kept",
                    series_uid,
                )
        except Exception:  # the status answer matters more than the history line
            log.exception("cannot record conflict event")
