"""Send: the metrics of deliveries an operator re-sent (real sockets and databases).

An attempt fenced out by a re-send made while it was in flight counts nothing: the row
starts over and its next attempt is the one counted. A re-sent row that is delivered is
counted, but its time from the last image (and its deliver stage) is not observed: it
measures when the operator asked, not the node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from sqlalchemy import select

from dicom_ai_node.metrics import NodeMetrics
from dicom_ai_node.send.deliver import Deliverer
from dicom_ai_node.store import actions
from dicom_ai_node.store.tables import Delivery, Job

from .test_send_outage import MODEL, Clock, deliverer, finish_job

__all__ = ["deliverer"]  # the fixture, shared with test_send_outage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WINDOW_S = 60.0


@pytest.fixture
def pacs() -> Iterator[tuple[str, list[Callable[[], None]]]]:
    """A pynetdicom Storage SCP accepting everything; yields (destination, hooks): each
    C-STORE first runs and drops the first hook, if any (what happens meanwhile)."""
    hooks: list[Callable[[], None]] = []

    def on_store(_event: Any) -> int:
        if hooks:
            hooks.pop(0)()
        return 0x0000  # Success (PS3.4 B.2.3)

    ae = AE(ae_title="PACS")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert server is not None
    try:
        yield f"PACS@127.0.0.1:{server.server_address[1]}", hooks
    finally:
        server.shutdown()


def sample(metrics: NodeMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_fenced_out_attempt_counts_nothing_and_a_resent_one_no_latency(
    deliverer: Deliverer, pacs: tuple[str, list[Callable[[], None]]]
) -> None:
    dest, hooks = pacs
    clock = deliverer.clock
    assert isinstance(clock, Clock)
    finish_job(deliverer.db, deliverer.files, clock.now, [dest], window_s=WINDOW_S)
    with deliverer.db.session() as session:
        job_pk = session.scalars(select(Job.pk)).one()

    def resend() -> None:  # an operator, while the first attempt is in flight
        actions.resend(deliverer.db.session, dest, "ann", clock.now, WINDOW_S, job_pk=job_pk)

    hooks.append(resend)
    metrics = deliverer.metrics
    delivered = {"destination": dest, "outcome": "delivered"}
    latency = ("dicom_ai_node_last_image_to_delivered_seconds_count", {"model": MODEL})
    assert deliverer.deliver() == 2
    with deliverer.db.session() as session:
        rows = session.scalars(select(Delivery)).all()
        assert {(r.state, r.attempts, r.resends) for r in rows} == {("pending", 0, 1)}
    assert sample(metrics, "dicom_ai_node_deliveries_total", **delivered) == 0
    assert sample(metrics, latency[0], **latency[1]) == 0
    assert deliverer.deliver() == 2  # the re-sent rows
    with deliverer.db.session() as session:
        rows = session.scalars(select(Delivery)).all()
        assert {(r.state, r.attempts) for r in rows} == {("delivered", 1)}
    assert sample(metrics, "dicom_ai_node_deliveries_total", **delivered) == 2
    assert sample(metrics, latency[0], **latency[1]) == 0
    stage = {"stage": "deliver", "model": MODEL}
    assert sample(metrics, "dicom_ai_node_stage_duration_seconds_count", **stage) == 0
