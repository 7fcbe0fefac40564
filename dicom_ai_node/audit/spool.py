"""Audit: the durable spool of syslog messages waiting for the collector.

One file per message, written temp -> fsync -> rename -> fsync folder, named so that
the names sort in the order the messages were spooled. A message leaves the spool only
after it was sent; a crash between the two sends it again (the collector sees a
duplicate, never a gap). The spool is bounded: beyond ``max_bytes`` a new message is
refused (it is in the local audit log anyway).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from pathlib import Path

from ..durable import fsync_dir

__all__ = ["Spool"]

SUFFIX = ".msg"
TEMP_SUFFIX = ".tmp"


class Spool:
    """A folder of messages, oldest first.

    Parameters
    ----------
    folder:
        Created (mode 0700) if missing; leftover temp files of a crash are removed.
    max_bytes:
        Largest total size of the spooled messages.
    """

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for temp in folder.glob(f"*{TEMP_SUFFIX}"):
            temp.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self._sizes = {p.name: p.stat().st_size for p in folder.glob(f"*{SUFFIX}")}
        self._numbers = itertools.count()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sizes)

    @property
    def size(self) -> int:
        """Bytes spooled now."""
        with self._lock:
            return sum(self._sizes.values())

    def put(self, message: bytes) -> bool:
        """Keep ``message`` durably; False when the spool is full (nothing written)."""
        with self._lock:
            if sum(self._sizes.values()) + len(message) > self.max_bytes:
                return False
            name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._numbers):09d}{SUFFIX}"
            self._sizes[name] = len(message)
        temp = self.folder / (name + TEMP_SUFFIX)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(message)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.folder / name)
            fsync_dir(self.folder)
        except OSError:
            with self._lock:
                self._sizes.pop(name, None)
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return True

    def oldest(self, count: int) -> list[Path]:
        """Up to ``count`` spooled messages, oldest first."""
        with self._lock:
            return [self.folder / name for name in sorted(self._sizes)[:count]]

    def remove(self, path: Path) -> None:
        """Drop a message that was sent."""
        with self._lock:
            self._sizes.pop(path.name, None)
        path.unlink(missing_ok=True)
