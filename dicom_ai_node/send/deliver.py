"""Send: the delivery loop's step: due results to their destination, each outcome recorded.

A job's results wait in the outbox (one delivery row per result and the destinations that
get its kind, written by :func:`~dicom_ai_node.store.jobs.complete_job`). Each call of
:meth:`Deliverer.deliver` makes one attempt per destination for what is due: an
association (C-STORE, PS3.4 Annex B), or STOW-RS requests (PS3.18 10.5) for a
``protocol = "dicomweb"`` destination; every row ends delivered, due again later (capped
exponential backoff, :mod:`.retry`) or failed once its retry window is over.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import ConfigError, DeliveryError
from ..metrics import NodeMetrics
from ..settings import Destination, NodeSettings
from ..store.db import Database
from ..store.files import FileStore
from ..store.outbox import DueDelivery, due_deliveries, finish_delivery_attempt
from .retry import RetryPolicy
from .scu import Peer, StoreOutcome, send_datasets
from .stow import WebPeer, stow_files

__all__ = ["Deliverer", "all_destinations", "destinations_for", "outbox_kinds"]

log = logging.getLogger(__name__)


def destinations_for(settings: NodeSettings, calling_ae_title: str) -> list[str]:
    """Where a study's results go: its sender (if in the AE table) plus configured extras.

    Parameters
    ----------
    settings:
        The node's settings (``send`` section and the AE table).
    calling_ae_title:
        The Calling AE Title that sent the study (PS3.8 9.3.2).

    Returns
    -------
    list[str]
        Destinations as ``AE@host:port``, the sender first, without repeats.
    """
    out = []
    known = settings.known_ae(calling_ae_title)
    if settings.send.default_to_sender and known is not None and known.send_results:
        out.append(known.address)
    out += [d.address for d in settings.send.destinations if d.address not in out]
    return out


def outbox_kinds(settings: NodeSettings, destinations: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The result kinds each destination gets (its ``results``), for the outbox rows.

    Parameters
    ----------
    settings:
        The node's settings (:meth:`~dicom_ai_node.settings.NodeSettings.destination`).
    destinations:
        Destination keys, as :func:`destinations_for` names them.

    Returns
    -------
    dict[str, tuple[str, ...]]
        Each destination's kinds (``SEG``, ``SR``, ``SC``, ``KOS``, ``GSPS``, ``PDF``).
    """
    return {d: settings.destination(d).results for d in destinations}


def all_destinations(settings: NodeSettings) -> list[str]:
    """Every destination the settings can send to (``AE@HOST:PORT``), as
    :func:`destinations_for` names them: the extra destinations, then each AE table
    entry that gets results."""
    out = [d.address for d in settings.send.destinations]
    if settings.send.default_to_sender:
        out += [e.address for e in settings.ae_table if e.send_results]
    return list(dict.fromkeys(out))


@dataclass
class Deliverer:
    """Sends due deliveries and records each outcome in the outbox.

    Parameters
    ----------
    settings:
        The ``send`` section (timeouts, retry schedule, calling AE title) and the AE
        table (which destinations want TLS).
    db, files:
        The index with the outbox, and the stored result files.
    clock:
        Current UTC time.
    tls_client:
        The client context for destinations marked ``tls`` in the AE table.
    on_delivered:
        Told the destination and delivery keys of each attempt's deliveries (the audit
        trail).
    metrics:
        Where each attempt's outcome per row, its time and each result's way from the
        last image to delivered are counted (a registry of its own when not given).
    """

    settings: NodeSettings
    db: Database
    files: FileStore
    clock: Callable[[], dt.datetime]
    tls_client: ssl.SSLContext | None = None
    on_delivered: Callable[[str, list[int]], None] | None = None
    metrics: NodeMetrics = field(default_factory=lambda: NodeMetrics(process=False))

    def deliver(self, destination: str | None = None) -> int:
        """Send every due delivery (of one destination, or all); returns how many were tried.

        Each destination gets one association attempt for its due results (PS3.4 Annex
        B); the node calls this once per destination in a thread of its own
        (:class:`~dicom_ai_node.send.senders.DestinationSenders`), so a destination that
        hangs until the timeout delays nobody else.
        """
        due = due_deliveries(self.db.session, self.clock(), destination)
        by_dest: dict[str, list[DueDelivery]] = {}
        for d in due:
            by_dest.setdefault(d.destination, []).append(d)
        for dest, items in by_dest.items():
            self._deliver_to(dest, items)
        return len(due)

    def wants_tls(self, destination: str | Peer) -> bool:
        """Whether the AE table or a ``send.destinations`` table marks this destination
        (title, host and port) for DICOM TLS."""
        try:
            peer = destination if isinstance(destination, Peer) else Peer.parse(destination)
        except ConfigError:
            return False
        if any(
            e.tls and (e.ae_title, e.host, e.port) == (peer.ae_title, peer.host, peer.port)
            for e in self.settings.ae_table
        ):
            return True
        keys = {str(peer), destination if isinstance(destination, str) else str(peer)}
        return any(self.settings.destination(k).tls for k in keys)

    def web_peer(self, target: Destination) -> WebPeer:
        """The DICOMweb archive of a ``protocol = "dicomweb"`` destination, its credentials
        and CA files resolved against the settings' folder (read by the sender, never
        logged)."""
        return WebPeer(
            url=target.address,
            auth=target.auth,
            credentials_file=str(self.settings.path(target.credentials_file))
            if target.credentials_file
            else "",
            ca_file=str(self.settings.path(target.ca_file)) if target.ca_file else "",
        )

    def _attempt(self, dest: str, items: list[DueDelivery]) -> tuple[list[StoreOutcome], str]:
        """One association to ``dest`` for ``items``: the per-instance outcomes, or none
        and the reason the association failed."""
        cfg = self.settings.send
        paths = [self.files.absolute(d.path) for d in items]
        try:
            target = self.settings.destination(dest)
            if target.protocol == "dicomweb":
                outcomes = stow_files(paths, self.web_peer(target), timeout_s=cfg.timeout_s)
            else:
                peer = Peer.parse(dest)
                outcomes = send_datasets(
                    paths,
                    peer,
                    calling_ae_title=cfg.calling_ae_title or self.settings.dicom.ae_title,
                    timeout_s=cfg.timeout_s,
                    tls=self.tls_client if self.wants_tls(peer) else None,
                )
        except (DeliveryError, ConfigError) as exc:  # the association failed: every item waits
            return [], str(exc)
        except Exception as exc:  # recorded on each row, so the window still ends it
            log.exception("delivery to %s failed unexpectedly", dest)
            return [], f"internal error: {type(exc).__name__}: {exc}"
        return outcomes, ""

    def _count(
        self, d: DueDelivery, now: dt.datetime, delivered: bool, retry_at: dt.datetime | None
    ) -> None:
        """The metrics of one row's attempt; for a delivered result, its time since the
        last image of its series and since it was made."""
        outcome = "delivered" if delivered else "retry" if retry_at is not None else "failed"
        self.metrics.delivery(d.destination, outcome)
        # a row an operator put back (re-send, retry: ``resends``) went when they asked,
        # maybe days after the result was made: its times would measure the operator
        if d.resends:
            return
        if delivered and d.last_received_at is not None and d.result_created_at is not None:
            self.metrics.result_delivered(
                d.model_name,
                (now - d.last_received_at).total_seconds(),
                (now - d.result_created_at).total_seconds(),
            )

    def _deliver_to(self, dest: str, items: list[DueDelivery]) -> None:
        """One attempt for one destination; each row ends delivered, retried later or failed."""
        cfg = self.settings.send
        policy = RetryPolicy(cfg.retry_initial_s, cfg.retry_max_s)
        started = time.monotonic()
        outcomes, error = self._attempt(dest, items)
        self.metrics.delivery_attempt(dest, time.monotonic() - started)
        by_uid = {o.sop_instance_uid: o for o in outcomes}
        now = self.clock()
        failed: list[tuple[str, dt.datetime | None]] = []
        for d in items:
            o = by_uid.get(d.sop_instance_uid)
            delivered = bool(o and o.delivered)
            message = "" if delivered else (o.message if o else error or "not sent")
            retry_at = (
                None if delivered else policy.next_attempt(d.attempts + 1, now, d.deadline_at)
            )
            recorded = finish_delivery_attempt(
                self.db.session,
                d,
                now,
                delivered=delivered,
                status=o.status if o else None,
                error=message,
                next_attempt_at=retry_at,
            )
            if recorded:  # not when a re-send fenced the attempt out: the row starts over
                self._count(d, now, delivered, retry_at)
            if not delivered:
                failed.append((message, retry_at))
        done = [d.pk for d in items if (o := by_uid.get(d.sop_instance_uid)) and o.delivered]
        if done and self.on_delivered is not None:
            self.on_delivered(dest, done)
        if failed:
            message, retry_at = failed[0]
            when = f"next attempt {retry_at:%H:%M:%S} UTC" if retry_at else "retry window over"
            log.warning(
                "%d of %d result(s) not delivered to %s (%s): %s",
                len(failed),
                len(items),
                dest,
                when,
                message,
            )
