"""Receive: the association's socket, reading each PDU whole into one buffer within a deadline.

pynetdicom reads a PDU in 4 KiB pieces and leaves an acceptor's socket blocking without a
timeout; here a PDU's header, then its body, is read into one buffer that grows only as
the bytes arrive, and each read must end within the network timeout.
"""

from __future__ import annotations

import socket
import time
from typing import Any, cast

from pynetdicom.transport import AssociationSocket

__all__ = ["RECV_STEP", "PduSocket", "PduTimeout"]

#: A receive buffer grows by at most this much before the bytes for it have arrived.
RECV_STEP = 1024 * 1024


class PduTimeout(Exception):
    """A PDU that did not arrive whole within its deadline: the association is aborted.

    Not an ``OSError``: pynetdicom's PDU reader takes those for a closed connection
    (Evt17) and would close without an A-ABORT; this one reaches the reactor's handler.
    """


class PduSocket(AssociationSocket):
    """An AssociationSocket reading each PDU into one buffer (not 4 KiB pieces).

    The buffer grows as the bytes arrive (at most :data:`RECV_STEP` ahead), so a length
    field claiming gigabytes costs no memory until a peer really sends them. Each read
    (a PDU header, then its body) must complete within :attr:`pdu_timeout` of its
    start, so that a peer trickling bytes, or stopping within a PDU, cannot hold the
    association's thread, its slot and its buffer: pynetdicom's idle timer (the network
    timeout) is looked at only between PDUs.
    """

    #: Seconds one read may take; the socket's own timeout must be the same (None:
    #: unbounded, as pynetdicom leaves an acceptor's socket).
    pdu_timeout: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Bytes read before the association existed (its A-ASSOCIATE-RQ), served first.
        self.pending = bytearray()

    @property
    def ready(self) -> bool:
        """Whether there is something to read (pending bytes count)."""
        return bool(self.pending) or bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        sock = cast(socket.socket, self.socket)
        if self.pending:
            served = self.pending[:nr_bytes]
            del self.pending[:nr_bytes]
            if len(served) == nr_bytes:
                return served
            return served + self.recv(nr_bytes - len(served))
        buffer = bytearray(min(nr_bytes, RECV_STEP))
        nr_read = 0
        timeout = self.pdu_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        shortened = False  # the socket's timeout, cut to what is left of the deadline
        try:
            while nr_read < nr_bytes:
                if nr_read == len(buffer):
                    buffer.extend(bytes(min(nr_bytes - nr_read, RECV_STEP)))
                if nr_read and deadline is not None:  # a second recv: the clock runs
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    sock.settimeout(left)
                    shortened = True
                with memoryview(buffer) as view:
                    got = sock.recv_into(view[nr_read:])
                if not got:  # the peer closed the connection: return what was read
                    break
                nr_read += got
        except TimeoutError as exc:
            raise PduTimeout(f"{nr_read} of {nr_bytes} bytes of a PDU in {timeout} s") from exc
        finally:
            if shortened:
                sock.settimeout(timeout)
        if nr_read < len(buffer):
            del buffer[nr_read:]
        return buffer
