"""Store: durable file writes (temp file, fsync, rename, fsync folder) and safe paths.

Paths are built only from UIDs that passed :func:`valid_uid`, whose characters (digits
and dots, no empty component) cannot escape the storage root.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..durable import fsync_dir, fsync_file
from ..errors import StorageError, StorageFullError
from .spares import SparePool

__all__ = ["FileStore", "TempFile", "valid_uid"]

#: How long a free-space reading is trusted (at 700 instances/s of 0.5 MB: 35 MB written).
FREE_SPACE_TTL_S = 0.1
#: How many resolved folders :meth:`FileStore.absolute` remembers.
_RESOLVED_FOLDERS = 4096
#: What :meth:`FileStore.write` accepts, alone or as a sequence written in order.
Chunk = bytes | bytearray | memoryview

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def valid_uid(value: object) -> bool:
    """Whether ``value`` is a conformant UID (PS3.5 9.1): digits and dots, <= 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID.match(value) is not None


@dataclass(frozen=True)
class TempFile:
    """A temp file written by :meth:`FileStore.write_temp`, not yet durable nor in place."""

    path: Path
    size: int


def _storage_error(exc: OSError) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError("no space left on the storage volume")
    return StorageError(f"cannot write file: {exc.strerror}")


class FileStore:
    """Files under one storage root: ``instances/<study>/<series>/<sop>.dcm`` and ``results/``.

    Parameters
    ----------
    root:
        The storage root; created if missing.
    fsync:
        Whether to fsync files and folders (turn off only for throwaway test stores).
    min_free_bytes:
        Writes are refused with :class:`StorageFullError` below this much free space.
    spare_budget_bytes:
        Disk kept in pre-written spare temp files (:mod:`.spares`); 0, or ``fsync`` off,
        means none.
    spare_max_bytes:
        Files larger than this never use a spare.
    """

    def __init__(
        self,
        root: Path,
        *,
        fsync: bool = True,
        min_free_bytes: int = 0,
        spare_budget_bytes: int = 0,
        spare_max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.root = root.resolve()
        self.fsync = fsync
        self.min_free_bytes = min_free_bytes
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.spares: SparePool | None = None
        if fsync and spare_budget_bytes > 0:
            self.spares = SparePool(
                self.tmp,
                budget_bytes=spare_budget_bytes,
                max_file_bytes=spare_max_bytes,
                min_free_bytes=min_free_bytes,
            )
        self._known_dirs: set[Path] = set()
        self._free = 0
        self._free_checked_at = float("-inf")
        self._resolved: dict[str, str] = {}  # relative folder -> resolved absolute folder

    def instance_path(self, study_uid: str, series_uid: str, sop_uid: str, sha256: str) -> str:
        """Relative path of an instance file; raises StorageError on a non-conformant UID.

        The name carries a prefix of the content hash, so two different payloads with the
        same SOP Instance UID never share a file and the index row always points at the
        bytes it describes.
        """
        for uid in (study_uid, series_uid, sop_uid):
            if not valid_uid(uid):
                raise StorageError("non-conformant UID cannot name a file")
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise StorageError("bad content hash")
        return f"instances/{study_uid}/{series_uid}/{sop_uid}.{sha256[:16]}.dcm"

    def result_path(self, study_uid: str, series_uid: str, sop_uid: str) -> str:
        """Relative path of a result object file."""
        for uid in (study_uid, series_uid, sop_uid):
            if not valid_uid(uid):
                raise StorageError("non-conformant UID cannot name a file")
        return f"results/{study_uid}/{series_uid}/{sop_uid}.dcm"

    def absolute(self, relative: str) -> Path:
        """The absolute path of a stored file; refuses anything outside the root.

        Folders are resolved (symbolic links followed) once and remembered; a plain file
        name is then joined to its resolved folder (a link there is still resolved).
        """
        folder_part, _, name = relative.rpartition("/")
        folder = self._resolved.get(folder_part)
        if folder is not None and name not in ("", ".", ".."):
            joined = os.path.join(folder, name)
            return self._resolve_link(Path(joined)) if os.path.islink(joined) else Path(joined)
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError("path escapes the storage root")
        if name not in ("", ".", "..") and path.name == name:
            if len(self._resolved) >= _RESOLVED_FOLDERS:
                self._resolved.clear()
            self._resolved[folder_part] = str(path.parent)
        return path

    def _resolve_link(self, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise StorageError("path escapes the storage root")
        return resolved

    def free_bytes(self) -> int:
        """Free bytes on the storage root's file system, asked now (the metrics' gauge)."""
        return shutil.disk_usage(self.root).free

    def check_free_space(self) -> None:
        """Raise StorageFullError when free space is below the reserve.

        The free space is asked of the file system at most every
        :data:`FREE_SPACE_TTL_S` seconds (a write that runs out of space in between
        still fails cleanly with ENOSPC).
        """
        if not self.min_free_bytes:
            return
        now = time.monotonic()
        if now - self._free_checked_at >= FREE_SPACE_TTL_S:
            self._free = shutil.disk_usage(self.root).free
            self._free_checked_at = now
        if self._free < self.min_free_bytes:
            raise StorageFullError("storage below its free-space reserve")

    def write(self, relative: str, chunks: Sequence[Chunk] | Chunk) -> int:
        """Write a file durably and atomically; return its size.

        :meth:`write_temp` then :meth:`commit`. On any error the temp file is removed and
        nothing is left at the final path.

        Raises
        ------
        StorageFullError
            On ENOSPC/EDQUOT or when below the free-space reserve.
        StorageError
            On any other OS error, or a path outside the root.
        """
        final = self.absolute(relative)  # refuse a bad path before writing anything
        return self._commit(self.write_temp(chunks), final)

    def write_temp(self, chunks: Sequence[Chunk] | Chunk) -> TempFile:
        """Write a new temp file in ``tmp/``, not yet durable (the first half of :meth:`write`).

        The caller then calls :meth:`commit` (or :meth:`discard`); a temp file left by a
        crash is removed by :meth:`sweep_temp` at the next start.

        Raises
        ------
        StorageFullError
            On ENOSPC/EDQUOT or when below the free-space reserve.
        StorageError
            On any other OS error.
        """
        self.check_free_space()
        parts = [chunks] if isinstance(chunks, Chunk) else chunks
        size = sum(memoryview(part).nbytes for part in parts)
        spare = self.spares.take(size) if self.spares is not None else None
        tmp = spare or self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY if spare else os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                self._write_parts(fd, parts)
                if spare:
                    os.ftruncate(fd, size)  # a spare is at least as long: cut it to the data
            finally:
                os.close(fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _storage_error(exc) from exc
        return TempFile(tmp, size)

    def _write_parts(self, fd: int, parts: Sequence[Chunk]) -> None:
        """Write every byte of ``parts`` to ``fd`` (the tests inject write failures here)."""
        for part in parts:
            view = memoryview(part).cast("B")
            while view:
                view = view[os.write(fd, view) :]

    def start_spares(self) -> None:
        """Start keeping spare temp files written ahead (no-op without a spare budget)."""
        if self.spares is not None:
            self.spares.start()

    def stop_spares(self) -> None:
        """Stop writing spare temp files; those on disk stay for the next start."""
        if self.spares is not None:
            self.spares.stop()

    def commit(self, temp: TempFile, relative: str) -> int:
        """Move a temp file to ``relative`` and make it durable there; return its size.

        When it returns, the file's bytes and its name are on disk: the temp file is
        fsynced, renamed into place and its folder fsynced, so a crash at any point leaves
        either nothing or the complete file at the final path (renaming first and
        fsyncing after would save one journal commit, ~5-9 % of ingest time, but could
        leave a partial file under its final name). On any error the temp file is
        removed and nothing is left at the final path.

        Raises
        ------
        StorageFullError
            On ENOSPC/EDQUOT.
        StorageError
            On any other OS error, or a path outside the root.
        """
        try:
            final = self.absolute(relative)
        except StorageError:
            self.discard(temp)
            raise
        return self._commit(temp, final)

    def _commit(self, temp: TempFile, final: Path) -> int:
        folder = final.parent
        try:
            if folder not in self._known_dirs:
                self._make_dirs(folder)
                self._known_dirs.add(folder)
            if self.fsync:
                fsync_file(temp.path)
            os.replace(temp.path, final)
        except OSError as exc:
            self.discard(temp)
            raise _storage_error(exc) from exc
        if self.fsync:
            try:
                fsync_dir(folder)
            except OSError as exc:
                raise _storage_error(exc) from exc
        return temp.size

    def _make_dirs(self, folder: Path) -> None:
        """Create ``folder`` and missing parents, fsyncing each parent that got an entry."""
        missing = []
        while not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        for new in reversed(missing):
            new.mkdir(exist_ok=True)
            if self.fsync:
                fsync_dir(new.parent)

    def discard(self, temp: TempFile) -> None:
        """Remove a temp file that will not be committed."""
        temp.path.unlink(missing_ok=True)

    def remove(self, relative: str) -> None:
        """Remove a stored file (used when the index transaction fails after the write)."""
        path = self.absolute(relative)
        path.unlink(missing_ok=True)
        if self.fsync and path.parent.exists():
            fsync_dir(path.parent)

    def sweep_temp(self) -> int:
        """Delete leftover temp files (from a crash mid-write); returns how many."""
        count = 0
        for leftover in self.tmp.glob("*.part"):
            leftover.unlink(missing_ok=True)
            count += 1
        return count
