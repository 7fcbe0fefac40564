"""Store: the history of associations (who connected, from where, what came of it).

The receive stage records each association when it ends (or is refused); the web stage
lists the newest. Only the newest :data:`ASSOCIATIONS_KEPT` rows are kept: the ATNA
audit trail is the record that lasts, this is the operator's recent view.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from ..domain import AssociationOutcome, parse_enum
from .tables import Association

__all__ = ["ASSOCIATIONS_KEPT", "AssociationOutcome", "record_association"]

#: Rows kept: older associations are removed as new ones are recorded.
ASSOCIATIONS_KEPT = 10_000


def record_association(
    sessions: sessionmaker[Session],
    *,
    started_at: dt.datetime,
    ended_at: dt.datetime,
    calling_ae_title: str,
    called_ae_title: str,
    address: str,
    instances: int,
    outcome: str | AssociationOutcome,
    reason: str = "",
    keep: int = ASSOCIATIONS_KEPT,
) -> int:
    """Record one association and drop all but the newest ``keep``; returns its key.

    Parameters
    ----------
    started_at, ended_at:
        When the connection was accepted and when it closed.
    calling_ae_title, called_ae_title:
        As the sender asked (PS3.8 9.3.2), empty when refused before the request.
    address:
        The sender's ``host:port``.
    instances:
        Instances stored on it.
    outcome:
        How it ended.
    reason:
        Why it was rejected, refused or aborted (empty when it completed).
    keep:
        How many rows to keep (at least 1).

    Raises
    ------
    ValueError
        When ``outcome`` is not one of :class:`AssociationOutcome`.
    """
    outcome = parse_enum(AssociationOutcome, outcome)
    with sessions.begin() as session:
        row = Association(
            started_at=started_at,
            ended_at=ended_at,
            calling_ae_title=calling_ae_title.strip()[:16],
            called_ae_title=called_ae_title.strip()[:16],
            address=address[:64],
            instances=instances,
            outcome=outcome.value,
            reason=reason,
        )
        session.add(row)
        session.flush()
        oldest_kept = (
            select(Association.pk).order_by(Association.pk.desc()).offset(max(1, keep) - 1).limit(1)
        ).scalar_subquery()
        session.execute(
            delete(Association)
            .where(Association.pk < oldest_kept)
            .execution_options(synchronize_session=False)
        )
        return row.pk
