"""Infer: compressed pixel data decoded in a separate process, bounded in memory and time.

The JPEG, JPEG-LS, JPEG 2000 and RLE decoders (PS3.5 A.4) are C libraries fed with
bytes from outside the hospital's control. A crash in one (a segmentation fault, an
abort) must fail the job whose data it was, not the node, and a decompression bomb must
hit a memory bound, not the machine's. Compressed images are therefore decoded in one
long-lived worker process (a fresh interpreter, so it shares no threads or locks with
the node), whose address space is limited with ``RLIMIT_AS``; each batch has a deadline
after which the worker is killed. A worker that dies is replaced at the next batch.

Uncompressed little-endian images are read in the node's own process
(``np.frombuffer``): no codec runs for them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from ..errors import InferenceError
from ..log import configure_logging

__all__ = ["IsolatedDecoder", "decode_in_process"]

Pixels = npt.NDArray[np.float32]


def decode_in_process(datasets: Sequence[Dataset]) -> list[Pixels]:
    """Rescaled pixels of each image, decoded here (see :func:`.volume.pixels_of`)."""
    from .volume import pixels_of

    return [pixels_of(ds) for ds in datasets]


def _limit_memory(limit_bytes: int) -> None:
    """Bound this process's address space (a decoder past it gets MemoryError)."""
    import resource

    if limit_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def _serve(requests: Connection, answers: Connection, limit_bytes: int) -> None:
    """The worker: decode each batch received, answer ("ok", arrays) or ("error", text)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node stops it, not a Ctrl-C
    _limit_memory(limit_bytes)
    conn = answers
    while True:
        try:
            batch = requests.recv()
        except (EOFError, OSError):
            return
        except MemoryError:  # the batch alone is past the bound
            conn.send(("error", "the images need more memory than infer.decoder_memory_mb"))
            continue
        try:
            answer: tuple[str, Any] = ("ok", decode_in_process(batch))
        except MemoryError:
            answer = ("error", "decoding needs more memory than infer.decoder_memory_mb")
        except Exception as exc:  # a broken code stream: the job fails with this reason
            answer = ("error", f"{type(exc).__name__}: {exc}"[:500])
        del batch
        try:
            conn.send(answer)
        except MemoryError:
            conn.send(("error", "decoded pixels exceed infer.decoder_memory_mb"))


def _death(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


class IsolatedDecoder:
    """Decodes images in a worker process (see the module's description).

    Parameters
    ----------
    memory_mb:
        Address-space limit of the worker; 0 for none.
    timeout_s:
        Longest time one batch may take; the worker is killed after it.

    The worker is ``python -m dicom_ai_node.infer.decode``, talking over two pipes; it
    exits when the node closes them (or dies).
    """

    def __init__(self, memory_mb: int = 4096, timeout_s: float = 300.0) -> None:
        self.limit_bytes = memory_mb * 1024 * 1024
        self.timeout_s = timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._to_worker: Connection | None = None
        self._from_worker: Connection | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The worker's process ID, while one runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def _start(self) -> tuple[Connection, Connection]:
        if (
            self._process is not None
            and self._process.poll() is None
            and self._to_worker is not None
            and self._from_worker is not None
        ):
            return self._to_worker, self._from_worker
        self._stop_worker()
        request_r, request_w = os.pipe()
        answer_r, answer_w = os.pipe()
        try:
            args = [str(request_r), str(answer_w), str(self.limit_bytes)]
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, *args],
                pass_fds=(request_r, answer_w),
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(request_r)
            os.close(answer_w)
        self._to_worker = Connection(request_w, readable=False)
        self._from_worker = Connection(answer_r, writable=False)
        return self._to_worker, self._from_worker

    def decode(self, datasets: Sequence[Dataset]) -> list[Pixels]:
        """Rescaled pixels of each image, in order.

        Raises
        ------
        InferenceError
            When the data cannot be decoded, the worker dies while decoding (crash,
            memory bound) or does not finish within ``timeout_s``.
        """
        if not datasets:
            return []
        with self._lock:
            to_worker, from_worker = self._start()
            try:
                to_worker.send(list(datasets))
                if not from_worker.poll(self.timeout_s):
                    self._stop_worker()
                    raise InferenceError(
                        f"pixel decoding took longer than {self.timeout_s:g} s; decoder stopped"
                    )
                status, value = from_worker.recv()
            except (EOFError, OSError) as exc:
                process = self._process
                returncode = None
                if process is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        returncode = process.wait(5)
                self._stop_worker()
                why = _death(returncode)
                raise InferenceError(f"the pixel decoder died ({why}); the job fails") from exc
        if status != "ok":
            raise InferenceError(f"pixel data cannot be decoded: {value}")
        return list(value)

    def _stop_worker(self) -> None:
        for conn in (self._to_worker, self._from_worker):
            if conn is not None:
                conn.close()
        process = self._process
        self._to_worker = self._from_worker = self._process = None
        if process is not None:
            try:
                process.wait(1)  # it exits when its pipes close
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def close(self) -> None:
        """Stop the worker (it is started again by the next :meth:`decode`)."""
        with self._lock:
            self._stop_worker()


def main(argv: Sequence[str]) -> int:
    """Entry point of the worker: ``REQUEST_FD ANSWER_FD LIMIT_BYTES``."""
    configure_logging("WARNING")  # its stderr is the node's: same one-line escaped records
    requests = Connection(int(argv[0]), writable=False)
    answers = Connection(int(argv[1]), readable=False)
    _serve(requests, answers, int(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
