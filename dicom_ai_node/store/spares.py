"""Store: spare temp files, written ahead of need, so that storing an instance fsyncs less.

Making a new file durable costs a journal commit of its block allocation (ext4, XFS);
overwriting blocks that are already allocated and written costs a data flush plus a
small commit of the new file size. The pool keeps pre-written, fsynced files of the
size instances have recently had; :meth:`SparePool.take` hands one out to be overwritten,
and a low-priority thread writes new ones while no instance arrives. PostgreSQL recycles
its write-ahead log segments for the same reason.

Correctness never depends on a spare: a spare lost in a crash, or missing when an
instance arrives, only means that instance takes the ordinary path (a new temp file).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

__all__ = ["GRANULE", "SparePool"]

log = logging.getLogger(__name__)

#: Spare sizes are multiples of this (64 KiB).
GRANULE = 64 * 1024
#: Size of the spares written before any instance was seen: one 512x512 16-bit slice.
DEFAULT_SIZE = 9 * GRANULE
_ZEROS = bytes(16 * GRANULE)
_NAME = re.compile(r"^[0-9a-f]{32}\.([0-9]+)\.spare$")


def bucket(size: int) -> int:
    """The smallest multiple of :data:`GRANULE` that holds ``size`` bytes."""
    return max(GRANULE, -(-size // GRANULE) * GRANULE)


class SparePool:
    """Pre-written files in one folder, handed out by size.

    Parameters
    ----------
    folder:
        Where spares live (the file store's temp folder: same file system as instances).
    budget_bytes:
        The most disk the spares may use together.
    max_file_bytes:
        Instances larger than this never use a spare.
    min_free_bytes:
        No spare is written when it would leave less than this free.
    idle_s:
        Spares are written only after this long without an instance.
    clock:
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        folder: Path,
        *,
        budget_bytes: int,
        max_file_bytes: int,
        min_free_bytes: int = 0,
        idle_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = folder
        self.budget_bytes = budget_bytes
        self.max_file_bytes = max_file_bytes
        self.min_free_bytes = min_free_bytes
        self.idle_s = idle_s
        self.clock = clock
        self._spares: dict[int, deque[Path]] = {}
        self._bytes = 0
        self._recent: deque[int] = deque(maxlen=64)
        self._last_take = float("-inf")
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- handing out --------------------------------------------------------------------------
    def take(self, size: int) -> Path | None:
        """A spare of at least ``size`` bytes (and at most one granule more), or None."""
        if size > self.max_file_bytes:
            return None
        wanted = bucket(size)
        with self._lock:
            self._recent.append(wanted)
            self._last_take = self.clock()
            for candidate in (wanted, wanted + GRANULE):
                queue = self._spares.get(candidate)
                if queue:
                    self._bytes -= candidate
                    return queue.popleft()
        return None

    def count(self) -> int:
        """How many spares are ready."""
        with self._lock:
            return sum(len(q) for q in self._spares.values())

    def target_size(self) -> int:
        """The size new spares get: the largest recent instance, rounded up to a granule."""
        with self._lock:
            return max(self._recent, default=DEFAULT_SIZE)

    # -- writing spares ----------------------------------------------------------------------
    def adopt(self) -> int:
        """Take over spares left by an earlier run whose size is intact; delete the others."""
        adopted = 0
        for path in sorted(self.folder.glob("*.spare")):
            match = _NAME.match(path.name)
            size = int(match.group(1)) if match else -1
            try:
                intact = size > 0 and path.stat().st_size == size
            except OSError:
                continue
            if intact and self._bytes + size <= self.budget_bytes:
                with self._lock:
                    self._spares.setdefault(size, deque()).append(path)
                    self._bytes += size
                adopted += 1
            else:
                path.unlink(missing_ok=True)
        return adopted

    def fill(self, should_stop: Callable[[], bool] = lambda: False, size: int = 0) -> int:
        """Write spares until the budget is used; return how many.

        Spares get ``size`` bytes (rounded up to a granule), or :meth:`target_size` when
        ``size`` is 0. Stops early when ``should_stop`` says so, when an instance arrived
        in the last ``idle_s`` seconds, or when the disk would go below the reserve;
        spares of other sizes are deleted to make room.
        """
        written = 0
        while not should_stop() and self._idle():
            size = bucket(size) if size else self.target_size()
            if not self._make_room(size):
                break
            if shutil.disk_usage(self.folder).free < self.min_free_bytes + size:
                break
            path = self.folder / f"{uuid.uuid4().hex}.{size}.spare"
            try:
                _write_zeros(path, size)
            except OSError as exc:
                path.unlink(missing_ok=True)
                log.warning("cannot write a spare file: %s", exc.strerror)
                break
            with self._lock:
                self._spares.setdefault(size, deque()).append(path)
                self._bytes += size
            written += 1
        return written

    def _idle(self) -> bool:
        with self._lock:
            return self.clock() - self._last_take >= self.idle_s

    def _make_room(self, size: int) -> bool:
        """Delete spares of other sizes until ``size`` fits the budget; False if it cannot."""
        while True:
            with self._lock:
                if self._bytes + size <= self.budget_bytes:
                    return True
                useful = (size, size - GRANULE)
                stale = [s for s, q in self._spares.items() if q and s not in useful]
                if not stale:
                    return False
                victim_size = min(stale)
                victim = self._spares[victim_size].popleft()
                self._bytes -= victim_size
            victim.unlink(missing_ok=True)

    # -- background thread -----------------------------------------------------------------
    def start(self) -> None:
        """Adopt leftover spares, then keep the pool full from a low-priority thread."""
        self.adopt()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="spares", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (spares on disk stay for the next run)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # Linux: a thread's own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while not self._stop.is_set():
            try:
                self.fill(self._stop.is_set)
            except Exception:  # spares only save time: never let them take the node down
                log.exception("spare files: fill failed")
            self._wake.wait(max(self.idle_s, 0.05))
            self._wake.clear()


def _write_zeros(path: Path, size: int) -> None:
    """Write ``size`` zero bytes to a new file and fsync it (its blocks allocated and written)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        left = size
        while left:
            left -= os.write(fd, memoryview(_ZEROS)[: min(left, len(_ZEROS))])
        os.fsync(fd)
    finally:
        os.close(fd)
