"""Send: when to try a failed delivery again: capped exponential backoff up to a deadline.

Pure (no I/O, time passed in), so the schedule is the same in the embedded node, in a
scaled-out worker and in unit tests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["RetryPolicy"]

_MAX_DOUBLINGS = 62
"""Beyond this many doublings any cap is reached; bounding the exponent keeps ``2**n``
finite after thousands of failed attempts (a float ``2.0**1024`` overflows)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff inside a retry window.

    After the n-th failed attempt (n = 1, 2, ...) the next one is due
    ``min(max_s, initial_s * 2**(n - 1))`` seconds later, but never after the
    delivery's deadline (the time its result was queued plus ``send.retry_window_s``,
    kept on the outbox row): the last attempt is made at the deadline, and a delivery
    that fails then ends as failed.

    So a destination that comes back is tried again at most ``max_s`` seconds after
    the last attempt that failed (plus the delivery loop's tick and the attempt
    itself), however long it was down.

    Parameters
    ----------
    initial_s:
        Delay after the first failed attempt, seconds (> 0).
    max_s:
        Largest delay between attempts (the cap), seconds (>= ``initial_s``).

    Raises
    ------
    ConfigError
        If a value is out of range (valid by construction).
    """

    initial_s: float
    max_s: float

    def __post_init__(self) -> None:
        if not self.initial_s > 0:
            raise ConfigError(f"send.retry_initial_s must be positive, not {self.initial_s!r}")
        if not self.max_s >= self.initial_s:
            raise ConfigError(
                f"send.retry_max_s ({self.max_s!r}) must be at least "
                f"send.retry_initial_s ({self.initial_s!r})"
            )

    def delay_s(self, failures: int) -> float:
        """Seconds from the end of the ``failures``-th failed attempt to the next one.

        Parameters
        ----------
        failures:
            Failed attempts so far, including the one just made (>= 1).

        Returns
        -------
        float
            ``min(max_s, initial_s * 2**(failures - 1))``.
        """
        doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
        return float(min(self.max_s, self.initial_s * 2**doublings))

    def next_attempt(
        self, failures: int, now: dt.datetime, deadline: dt.datetime
    ) -> dt.datetime | None:
        """When to try again after a failed attempt that ended at ``now``.

        Parameters
        ----------
        failures:
            Failed attempts so far, including the one that just ended (>= 1).
        now:
            End of that attempt (timezone-aware).
        deadline:
            End of the delivery's retry window (timezone-aware).

        Returns
        -------
        datetime.datetime or None
            The next attempt time, at the latest the deadline; ``None`` when the
            window is over (the delivery has failed for good).
        """
        if now >= deadline:
            return None
        return min(now + dt.timedelta(seconds=self.delay_s(failures)), deadline)
