"""Audit: what people do through the web service: logins, actions, refused requests.

- A login, a failed login and a logout are User Authentication messages (PS3.15 A.5.3.12).
- An action that changes what the node does (re-run, re-send, cancel, force-complete,
  pause, resume, retry) is a Security Alert of type Software Configuration (110131,
  A.5.3.11), with the user as the active participant and the action and its object in the
  alert description: the standard has no event of its own for "an operator steered a
  workflow", and a security officer reviewing the trail should see each one.
- A request refused for missing credentials or a role too low is a Security Alert of type
  Use of Restricted Function (110132).

The descriptions name jobs, results and UIDs, never a patient's name or ID.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from .codes import SOFTWARE_CONFIGURATION, USE_OF_RESTRICTED_FUNCTION, Code, Outcome
from .messages import AuditSource, Participant, security_alert, user_authentication
from .trail import AuditTrail

__all__ = ["OperatorAudit"]


@dataclass(frozen=True)
class OperatorAudit:
    """Records the web service's users' logins, actions and refusals in the audit trail.

    Parameters
    ----------
    trail:
        The node's audit trail.
    source:
        The audit source (the node).
    node:
        The node as a participant (the reporter).
    clock:
        Current UTC time.
    """

    trail: AuditTrail
    source: AuditSource
    node: Participant
    clock: Callable[[], dt.datetime]

    def login(self, username: str, address: str, *, ok: bool, logout: bool = False) -> None:
        """User Authentication: a login (or logout) through the web service, or a failed one."""
        user = Participant(username or "(none)", True, network_access_point=address or "unknown")
        self.trail.record(
            user_authentication(
                login=not logout,
                user=user,
                node=self.node,
                source=self.source,
                at=self.clock(),
                outcome=Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE,
            )
        )

    def action(self, username: str, address: str, action: str, target: str, *, ok: bool) -> None:
        """Security Alert (Software Configuration): ``username`` did ``action`` on ``target``."""
        self._alert(
            SOFTWARE_CONFIGURATION,
            username,
            address,
            f"{action} {target} by {username or '(none)'}"
            + ("" if ok else " (refused: not applicable)"),
            Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE,
        )

    def refused(self, username: str, address: str, method: str, path: str, reason: str) -> None:
        """Security Alert (Use of Restricted Function): a request refused, and why."""
        self._alert(
            USE_OF_RESTRICTED_FUNCTION,
            username,
            address,
            f"{method} {path} refused for {username or 'an anonymous client'}: {reason}",
            Outcome.MINOR_FAILURE,
        )

    def _alert(
        self, event_type: Code, username: str, address: str, text: str, outcome: Outcome
    ) -> None:
        where = address or "unknown"
        self.trail.record(
            security_alert(
                event_type=event_type,
                reporter=self.node,
                performers=[Participant(username or "(none)", True, network_access_point=where)],
                subject_node=where,
                subject_name=username or "(none)",
                description=text,
                source=self.source,
                at=self.clock(),
                outcome=outcome,
            )
        )
