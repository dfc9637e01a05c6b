"""Fault knobs and the simulated clock of the partner simulators.

A simulator behaves according to its current :class:`Faults` mode:

- ``ok``: answer normally; a request completes as soon as it is received.
- ``fail``: the next ``fail_count`` protocol calls fail (HTTP 500, or a ``failed`` response
  file), then the simulator behaves ``ok`` again; ``fail_count=-1`` fails forever.
- ``stall``: wait ``stall_seconds`` before answering every protocol call (clients time out).
- ``late``: a request completes only once the simulated clock has passed its received time
  plus ``late_hours``.
- ``never``: requests are accepted and never completed.
- ``lie``: completed results also carry another subject's rows.
- ``keep``: an erasure is answered as done, with the counts of what it would delete, and nothing
  is deleted (a partner that claims erasure but keeps the rows).
- ``leak``: every request is refused with an error message that quotes the identities it was
  sent (as careless partners do), so the product must keep such text out of its ledger.

The mode in force when a request is received decides when it completes and whether its
result lies; later changes do not rewrite requests already received.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

MODES = ("ok", "fail", "stall", "late", "never", "lie", "keep", "leak")

# What a partner in ``never`` mode promises, and does not keep: the GDPR month.
NEVER_PROMISE = timedelta(days=30)


def _non_negative(name: str, value: Any) -> float:
    """Check a JSON-ish number: real, finite and not negative."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    return float(value)


@dataclass(frozen=True)
class Faults:
    """How a partner simulator misbehaves (immutable: replace it to change behaviour).

    :param mode: one of :data:`MODES`.
    :param fail_count: ``fail`` mode: how many protocol calls fail, ``-1`` for all of them.
    :param stall_seconds: ``stall`` mode: delay before every answer.
    :param late_hours: ``late`` mode: simulated hours between receiving and completing.
    :raises ValueError: on an unknown mode or an out-of-range value.
    """

    mode: str = "ok"
    fail_count: int = 0
    stall_seconds: float = 0.0
    late_hours: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        if isinstance(self.fail_count, bool) or not isinstance(self.fail_count, int) or self.fail_count < -1:
            raise ValueError("fail_count must be an integer >= 0, or -1 for always")
        if self.mode == "fail" and self.fail_count == 0:
            raise ValueError("mode 'fail' needs fail_count >= 1, or -1 for always")
        object.__setattr__(self, "stall_seconds", _non_negative("stall_seconds", self.stall_seconds))
        object.__setattr__(self, "late_hours", _non_negative("late_hours", self.late_hours))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faults:
        """Build faults from a JSON object; missing fields take their defaults.

        :param data: a mapping of :class:`Faults` field names to values.
        :raises ValueError: on unknown fields or invalid values.
        """
        if not isinstance(data, Mapping):
            raise ValueError("faults must be a JSON object")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The faults as a JSON-ready dict."""
        return asdict(self)

    def schedule(self, received: datetime) -> tuple[datetime | None, datetime]:
        """When a request received under these faults completes.

        :param received: the simulated time the request arrived.
        :returns: ``(due, promised)``: the earliest completion time (None under ``never``)
            and the completion time the partner announces (``never`` promises a month).
        """
        if self.mode == "never":
            return None, received + NEVER_PROMISE
        if self.mode == "late":
            due = received + timedelta(hours=self.late_hours)
            return due, due
        return received, received

    def after_failure(self) -> Faults:
        """The faults left once one simulated failure has been served."""
        if self.mode != "fail" or self.fail_count == -1:
            return self
        if self.fail_count > 1:
            return replace(self, fail_count=self.fail_count - 1)
        return Faults()


def to_iso(moment: datetime) -> str:
    """ISO-8601 text of a UTC moment, to the second, as the protocol writes times."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class SimClock:
    """Real UTC time plus an offset, so tests can make simulated days pass instantly.

    :param offset_hours: initial offset from real time.
    """

    def __init__(self, offset_hours: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._offset_hours = _non_negative("offset_hours", offset_hours)

    @property
    def offset_hours(self) -> float:
        """Hours the simulated clock runs ahead of real time."""
        return self._offset_hours

    def now(self) -> datetime:
        """The simulated current time (timezone-aware UTC)."""
        return datetime.now(UTC) + timedelta(hours=self._offset_hours)

    def advance(self, hours: float) -> datetime:
        """Move the clock forward.

        :param hours: non-negative number of hours to add to the offset.
        :returns: the new simulated time.
        """
        hours = _non_negative("advance_hours", hours)
        with self._lock:
            self._offset_hours += hours
        return self.now()

    def set_offset(self, hours: float) -> None:
        """Set the total offset (the remote ``_control/clock.json`` form).

        :param hours: non-negative offset from real time in hours.
        """
        self._offset_hours = _non_negative("advance_hours", hours)

    def to_dict(self) -> dict[str, Any]:
        """Current simulated time and offset, JSON-ready."""
        return {"now": to_iso(self.now()), "offset_hours": self._offset_hours}
