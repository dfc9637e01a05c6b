"""Compliance KPIs over request outcomes: share answered in time, median time to close.

Pure functions over :class:`Outcome` rows (no I/O); :mod:`include.dsr.sla.reports`
reads the rows from the ledger. Definitions (GDPR Art. 12(3), ``GDPR.md`` "Time limits"):

- *answered*: closed as ``completed`` or ``refused`` (a ``failed`` close is no answer).
- *within 1 month*: ``closed_at <= due_at``, the non-extended due date set at intake;
  *within 3 months*: ``closed_at <= sla.due_at(received_at, extended=True)`` (received +
  3 months by the same rules; 90 days under CCPA).
- The share of a window is *answered in time / eligible*. A request is eligible once it is
  answered, or once its window has ended without an answer: requests still inside their
  window are not judged yet, and overdue unanswered ones (open or failed) count against it.
- *time to close*: ``closed_at - received_at`` of answered requests, in days.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from include.dsr.sla import deadlines as sla

#: Closing statuses that count as an answer to the data subject.
ANSWERED_STATUSES = ("completed", "refused")
#: Windows of the KPI: ``1m`` (first deadline) and ``3m`` (received + 3 months).
WINDOWS = ("1m", "3m")
_SECONDS_PER_DAY = 86400


@dataclass(frozen=True)
class Outcome:
    """The columns of a request (``dsr_requests``) that decide whether it was answered in time."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("jurisdiction", "status", "received_at", "due_at", "closed_at", "outcome")

    jurisdiction: str
    status: str
    received_at: datetime
    due_at: datetime
    closed_at: datetime | None
    outcome: str | None = None

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> Outcome:
        """Build from a result row mapping holding :attr:`COLUMNS`."""
        return cls(**{name: row[name] for name in cls.COLUMNS})

    @property
    def answered(self) -> bool:
        """Closed as ``completed`` or ``refused``."""
        return self.closed_at is not None and self.status in ANSWERED_STATUSES

    def window_end(self, window: str) -> datetime:
        """End of the ``1m`` window (due date at intake) or ``3m`` window (received + 3 months).

        :raises ValueError: ``window`` is not one of :data:`WINDOWS`.
        """
        if window == "1m":
            return self.due_at
        if window == "3m":
            return sla.due_at(self.received_at, self.jurisdiction, extended=True)
        raise ValueError(f"unknown window {window!r}: expected one of {list(WINDOWS)}")


@dataclass(frozen=True)
class WindowShare:
    """Share of eligible requests answered within a window (``1m`` or ``3m``)."""

    window: str
    answered_in_time: int
    eligible: int

    @property
    def ratio(self) -> float | None:
        """``answered_in_time / eligible``; None while no request is eligible."""
        return self.answered_in_time / self.eligible if self.eligible else None

    def as_json(self) -> dict[str, Any]:
        """JSON-ready dict: ``answered_in_time``, ``eligible`` and ``ratio``."""
        return {"answered_in_time": self.answered_in_time, "eligible": self.eligible, "ratio": self.ratio}


def window_share(window: str, outcomes: Iterable[Outcome], now: datetime) -> WindowShare:
    """The share of ``window`` over ``outcomes``, judged at ``now``."""
    in_time = eligible = 0
    for row in outcomes:
        end = row.window_end(window)
        if row.answered:
            eligible += 1
            in_time += row.closed_at is not None and row.closed_at <= end
        elif now > end:
            eligible += 1
    return WindowShare(window=window, answered_in_time=in_time, eligible=eligible)


def median_days_to_close(outcomes: Iterable[Outcome]) -> float | None:
    """Median days from received to closed over the answered outcomes; None if none."""
    days = [
        (row.closed_at - row.received_at).total_seconds() / _SECONDS_PER_DAY
        for row in outcomes
        if row.answered and row.closed_at is not None
    ]
    return statistics.median(days) if days else None
