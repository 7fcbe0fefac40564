"""Kill -9 harness: the peers around the node under test.

- :class:`Sender`, a Storage SCU (pynetdicom) that records which instances were answered
  Success, and can hold back the node's responses (through :class:`HoldingProxy`);
- :class:`HoldingProxy`, a TCP relay between the sender and the node that can stop
  passing the node's bytes to the sender: the node has committed an instance and
  answered, but the sender never sees the answer ("between commit and response");
- :class:`RecordingPacs`, the destination: a Storage SCP that records every result it
  receives (SOP Instance UID, study, SHA-256 of the data set as received) and can be
  made slow, so that a kill lands while the node is sending.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.transport import ThreadedAssociationServer

__all__ = ["HoldingProxy", "Receipt", "RecordingPacs", "Sender", "dataset_bytes"]

#: Seconds any one network step of the harness may take (association, one C-STORE).
NET_TIMEOUT_S = 10.0
#: Longest a held-up destination handler sleeps (bounds :attr:`RecordingPacs.delay_s`).
MAX_DELAY_S = 5.0


def _nodelay(event: evt.Event) -> None:
    """TCP_NODELAY on a pynetdicom socket (pynetdicom never sets it; ~40 ms per message)."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def dataset_bytes(ds: Dataset) -> bytes:
    """The data set exactly as :meth:`Sender.run` puts it on the wire (explicit VR LE)."""
    data = encode(ds, False, True)
    assert data is not None
    return bytes(data)


class HoldingProxy:
    """A TCP relay to the node that can hold back everything the node sends.

    Parameters
    ----------
    target_port:
        The node's port on 127.0.0.1 (each accepted connection opens one to it).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        #: While set, bytes from the node are dropped instead of passed on.
        self.hold = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._start(self._accept, "proxy accept")

    def _start(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), 5.0)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, upstream]
            self._start(self._pump, "proxy up", client, upstream, False)
            self._start(self._pump, "proxy down", upstream, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, from_node: bool) -> None:
        """Copy until either side closes (a killed node closes its side at once)."""
        try:
            while data := src.recv(65536):
                if from_node and self.hold.is_set():
                    continue  # the node answered, the sender will never know
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Close every relayed connection and stop holding (for the next association)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.hold.clear()

    def close(self) -> None:
        """Stop accepting, close everything, and wait (bounded) for the relay threads."""
        self._stop.set()
        self._listener.close()
        self.cut()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5.0)


class Sender(threading.Thread):
    """Sends data sets over one association, in order, and records each Success.

    Parameters
    ----------
    port:
        Where to send (the proxy's port).
    datasets:
        What to send (CT Image Storage, explicit VR little endian).
    calling_ae_title:
        Our AE title (the node sends results back to it: it is in the node's AE table).
    before_each:
        Called with the index of each data set just before it is sent.
    """

    def __init__(
        self,
        port: int,
        datasets: Sequence[Dataset],
        calling_ae_title: str,
        before_each: Callable[[int], None] = lambda _i: None,
    ) -> None:
        super().__init__(name="sender", daemon=True)
        self.port = port
        self.datasets = list(datasets)
        self.calling_ae_title = calling_ae_title
        self.before_each = before_each
        self.acked: list[str] = []
        self._cond = threading.Condition()
        self.finished = threading.Event()
        self._assoc: Association | None = None

    def run(self) -> None:
        ae = AE(ae_title=self.calling_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = NET_TIMEOUT_S
        for uid in {str(ds.SOPClassUID) for ds in self.datasets}:
            ae.add_requested_context(uid, ExplicitVRLittleEndian)
        try:
            assoc = ae.associate(
                "127.0.0.1",
                self.port,
                ae_title="AI_NODE",
                evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)],
            )
            self._assoc = assoc
            if not assoc.is_established:
                return
            for i, ds in enumerate(self.datasets):
                self.before_each(i)
                try:
                    rsp = assoc.send_c_store(ds)
                except RuntimeError:  # the association ended just before (the node died)
                    return
                if rsp and int(rsp.get("Status", -1)) == 0x0000:
                    with self._cond:
                        self.acked.append(str(ds.SOPInstanceUID))
                        self._cond.notify_all()
                if not assoc.is_established:
                    return
            assoc.release()
        finally:
            ae.shutdown()
            self.finished.set()
            with self._cond:
                self._cond.notify_all()

    def unblock(self, timeout_s: float = NET_TIMEOUT_S) -> None:
        """End a wait for a response that cannot come any more: the node is dead.

        pynetdicom waits its whole DIMSE timeout for a response even after the connection
        closed. Once its DUL has seen the close (after any response that was still in the
        socket, which is processed first and so still counts), an empty message wakes
        the wait, and the instance counts as not acknowledged.
        """
        deadline = time.monotonic() + timeout_s
        assoc = self._assoc
        while assoc is not None and assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.01)
        if assoc is not None and not assoc.is_established and not self.finished.is_set():
            waiting = getattr(assoc.dimse, "msg_queue", None)  # pynetdicom 3.0's queue
            if waiting is not None:  # else the wait ends at the DIMSE timeout
                waiting.put((None, None))

    def wait_acked(self, count: int, timeout_s: float) -> bool:
        """Wait (bounded) until ``count`` instances were answered Success."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.acked) < count and not self.finished.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
            return len(self.acked) >= count

    def acked_now(self) -> set[str]:
        """The instances answered Success so far."""
        with self._cond:
            return set(self.acked)


@dataclass(frozen=True)
class Receipt:
    """One result object the destination received."""

    sop_instance_uid: str
    study_instance_uid: str
    sha256: str


class RecordingPacs:
    """The destination: records every C-STORE it receives, then answers Success.

    A receipt is recorded as soon as the data set has arrived (before any delay), like a
    PACS that has stored it: a re-delivery after a kill then shows up as a second receipt.
    """

    def __init__(self, ae_title: str) -> None:
        self.ae = AE(ae_title=ae_title)
        self.ae.supported_contexts = StoragePresentationContexts
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 30.0
        self.receipts: list[Receipt] = []
        #: Seconds each C-STORE handler sleeps before answering (the kill "during sending").
        self.delay_s = 0.0
        #: Set when a C-STORE arrives (cleared by the harness before it waits for one).
        self.entered = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None
        self.port = 0

    def start(self, port: int) -> None:
        """Listen on 127.0.0.1:``port`` in background threads."""
        handlers: list[Any] = [(evt.EVT_CONN_OPEN, _nodelay), (evt.EVT_C_STORE, self._store)]
        self._server = self.ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
        self.port = port

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()

    def _store(self, event: evt.Event) -> int:
        data = cast(C_STORE, event.request).DataSet
        raw = data.getvalue() if isinstance(data, BytesIO) else b""
        ds = event.dataset
        receipt = Receipt(
            str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), hashlib.sha256(raw).hexdigest()
        )
        with self._lock:
            self.receipts.append(receipt)
        self.entered.set()
        time.sleep(min(max(self.delay_s, 0.0), MAX_DELAY_S))
        return 0x0000

    def received(self) -> list[Receipt]:
        """Every receipt so far, in order."""
        with self._lock:
            return list(self.receipts)
