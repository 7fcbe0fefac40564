"""Store: durable file writes (temp file, fsync, rename, fsync folder) and safe paths.

Paths are built only from UIDs that passed :func:`valid_uid`, whose characters (digits
and dots, no empty component) cannot escape the storage root.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from pathlib import Path

from ..errors import StorageError, StorageFullError

__all__ = ["FileStore", "valid_uid"]

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def valid_uid(value: object) -> bool:
    """Whether ``value`` is a conformant UID (PS3.5 9.1): digits and dots, <= 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID.match(value) is not None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """

    def __init__(self, root: Path, *, fsync: bool = True, min_free_bytes: int = 0) -> None:
        self.root = root.resolve()
        self.fsync = fsync
        self.min_free_bytes = min_free_bytes
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[Path] = set()

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
        """The absolute path of a stored file; refuses anything outside the root."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError("path escapes the storage root")
        return path

    def check_free_space(self) -> None:
        """Raise StorageFullError when free space is below the reserve."""
        if self.min_free_bytes and shutil.disk_usage(self.root).free < self.min_free_bytes:
            raise StorageFullError("storage below its free-space reserve")

    def write(self, relative: str, chunks: list[bytes] | bytes) -> int:
        """Write a file durably and atomically; return its size.

        The bytes go to a temp file in ``tmp/``, which is fsynced, renamed into place and
        its folder fsynced. On any error the temp file is removed and nothing is left at
        the final path.

        Raises
        ------
        StorageFullError
            On ENOSPC/EDQUOT or when below the free-space reserve.
        StorageError
            On any other OS error.
        """
        self.check_free_space()
        final = self.absolute(relative)
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        size = 0
        parts = [chunks] if isinstance(chunks, bytes) else chunks
        try:
            with open(tmp, "wb") as fh:
                for part in parts:
                    fh.write(part)
                    size += len(part)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            folder = final.parent
            if folder not in self._known_dirs:
                folder.mkdir(parents=True, exist_ok=True)
                if self.fsync:
                    _fsync_dir(folder.parent)
                self._known_dirs.add(folder)
            os.replace(tmp, final)
            if self.fsync:
                _fsync_dir(folder)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError("no space left on the storage volume") from exc
            raise StorageError(f"cannot write file: {exc.strerror}") from exc
        return size

    def remove(self, relative: str) -> None:
        """Remove a stored file (used when the index transaction fails after the write)."""
        path = self.absolute(relative)
        path.unlink(missing_ok=True)
        if self.fsync and path.parent.exists():
            _fsync_dir(path.parent)

    def sweep_temp(self) -> int:
        """Delete leftover temp files (from a crash mid-write); returns how many."""
        count = 0
        for leftover in self.tmp.glob("*.part"):
            leftover.unlink(missing_ok=True)
            count += 1
        return count
