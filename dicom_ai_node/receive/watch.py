"""Receive: what each association did, told to the metrics and to the association history.

The server reports a connection closed before it became an association
(:meth:`AssociationWatch.refused`: no valid A-ASSOCIATE-RQ, a failed TLS handshake, a
full gate, a caller rejected by the node's checks); each association made is reported
when it begins (:meth:`~AssociationWatch.begin`, with the titles of its request), for
each C-STORE answered Success (:meth:`~AssociationWatch.stored`) and when its thread
ends (:meth:`~AssociationWatch.end`), whatever ended it. Each ending is counted in the
metrics and handed, as an :class:`~dicom_ai_node.domain.AssociationSummary`, to the
callback the composition root gives (the association history).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..domain import AssociationOutcome, AssociationSummary
from ..metrics import NodeMetrics
from .gate import called_ae_title, calling_ae_title

__all__ = ["AssociationWatch"]

log = logging.getLogger(__name__)

#: Bytes of an A-ASSOCIATE-RQ up to the end of its Calling AE Title (PS3.8 9.3.2).
_TITLES_END = 42


def _printable(text: str) -> str:
    """``text`` with anything but printable ASCII shown as ``?`` (a title may hold bytes
    a refused caller chose; the history shows them, never interprets them)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _titles(request: bytes) -> tuple[str, str]:
    """The calling and called AE titles of a request, or empty ones without a request."""
    if len(request) < _TITLES_END:
        return "", ""
    return _printable(calling_ae_title(request)), _printable(called_ae_title(request))


def _ending(assoc: Any) -> tuple[AssociationOutcome, str]:
    """How an association ended, from pynetdicom's flags, with the reason to show."""
    if assoc.is_rejected:
        return AssociationOutcome.REJECTED, "rejected while negotiating the association"
    if assoc.is_released:
        return AssociationOutcome.COMPLETED, ""
    if assoc.is_aborted:
        return AssociationOutcome.ABORTED, "aborted (A-ABORT, A-P-ABORT or a timeout)"
    return AssociationOutcome.ABORTED, "connection closed without a release"


@dataclass
class _Open:
    """An association being served."""

    calling: str
    called: str
    address: str
    started_at: dt.datetime
    instances: int = 0


class AssociationWatch:
    """Follows the listener's associations for the metrics and the history.

    Parameters
    ----------
    metrics:
        Where each ending is counted.
    on_end:
        Told each :class:`~dicom_ai_node.domain.AssociationSummary`; its errors are
        logged, never raised (the listener goes on).
    clock:
        Current UTC time.
    """

    def __init__(
        self,
        metrics: NodeMetrics,
        on_end: Callable[[AssociationSummary], None] | None,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.metrics = metrics
        self.on_end = on_end
        self.clock = clock
        # keyed by the association object: one that never reports its end (pynetdicom's
        # own reactor, with a version the node's is not validated with) is not kept
        self._open: weakref.WeakKeyDictionary[Any, _Open] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def refused(
        self,
        address: str,
        request: bytes,
        outcome: AssociationOutcome,
        reason: str,
        started_at: dt.datetime,
    ) -> None:
        """A connection closed before it became an association (``request`` may be empty)."""
        calling, called = _titles(request)
        self._report(
            AssociationSummary(
                calling, called, address, 0, outcome, reason, started_at, self.clock()
            )
        )

    def begin(self, assoc: Any, address: str, request: bytes, started_at: dt.datetime) -> None:
        """An association was made for ``request``: follow it until :meth:`end`."""
        calling, called = _titles(request)
        with self._lock:
            self._open[assoc] = _Open(calling, called, address, started_at)

    def stored(self, assoc: Any) -> None:
        """One more C-STORE of ``assoc`` answered Success."""
        with self._lock:
            entry = self._open.get(assoc)
            if entry is not None:
                entry.instances += 1

    def end(self, assoc: Any) -> None:
        """The association's thread ends: report how (once)."""
        with self._lock:
            entry = self._open.pop(assoc, None)
        if entry is None:
            return
        outcome, reason = _ending(assoc)
        self._report(
            AssociationSummary(
                entry.calling,
                entry.called,
                entry.address,
                entry.instances,
                outcome,
                reason,
                entry.started_at,
                self.clock(),
            )
        )

    def _report(self, summary: AssociationSummary) -> None:
        self.metrics.association_ended(summary.outcome)
        if self.on_end is None:
            return
        try:
            self.on_end(summary)
        except Exception:  # the history is not worth a listener thread
            log.exception("cannot record the association from %s", summary.address)
