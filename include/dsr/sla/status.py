"""SLA status of a data-subject request, as the monitor DAG and the dashboard show it.

Pure functions over ledger rows: no Airflow import, no I/O except :func:`owed_partners`
and :func:`current_deadline`, which read the ledger they are given.

- ``closed``: the request has a ``closed_at``.
- ``breached``: open and ``now`` is after the deadline in force.
- ``at_risk``: open, not breached, and fewer than ``at_risk_days`` calendar days left.
- ``on_track``: everything else.

The deadline in force is ``row.effective_due_at`` (the extended one if an extension was
recorded), moved by identity-verification pauses that count (see
:mod:`include.dsr.sla.rules`): pass it as ``deadline`` or use :func:`current_deadline`.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from include.dsr.sla.deadlines import CONTROLLER_TZ

if TYPE_CHECKING:
    from include.dsr.ledger.api import Ledger
    from include.dsr.ledger.schema import RequestRow

ON_TRACK = "on_track"
AT_RISK = "at_risk"
BREACHED = "breached"
CLOSED = "closed"
STATUSES = (ON_TRACK, AT_RISK, BREACHED, CLOSED)
#: Default of the ``dsr_at_risk_days`` Airflow Variable.
DEFAULT_AT_RISK_DAYS = 7
#: System-row statuses meaning "the partner has not answered yet".
OWED_SYSTEM_STATUSES = ("pending", "waiting")


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def days_left(row: RequestRow, now: datetime, *, deadline: datetime | None = None) -> int:
    """Whole calendar days, in the controller's time zone, from ``now`` to the deadline day.

    0 on the due day itself (still in time until 23:59:59 local), negative once past.
    For a closed request the count is taken at ``closed_at`` (the margin it was answered with).

    :param deadline: the deadline in force; default ``row.effective_due_at``.
    """
    due = _aware("deadline", deadline or row.effective_due_at)
    moment = row.closed_at if row.closed_at is not None else _aware("now", now)
    return (due.astimezone(CONTROLLER_TZ).date() - moment.astimezone(CONTROLLER_TZ).date()).days


def request_status(
    row: RequestRow,
    now: datetime,
    at_risk_days: int = DEFAULT_AT_RISK_DAYS,
    *,
    deadline: datetime | None = None,
) -> str:
    """One of ``on_track``, ``at_risk``, ``breached``, ``closed``.

    :param at_risk_days: a request with fewer days left than this is at risk.
    :param deadline: the deadline in force; default ``row.effective_due_at``.
    """
    if row.closed_at is not None:
        return CLOSED
    due = _aware("deadline", deadline or row.effective_due_at)
    if _aware("now", now) > due:
        return BREACHED
    if days_left(row, now, deadline=due) < at_risk_days:
        return AT_RISK
    return ON_TRACK


def owed_partners(ledger: Ledger, request_id: str, partner_systems: Collection[str] | None = None) -> list[str]:
    """Partner systems whose reply is still owed (row ``pending`` or ``waiting``), sorted.

    Whether that matters is the request's status: a partner listed here while the
    request is ``at_risk`` or ``breached`` is what ops chase.

    :param partner_systems: keys of partner systems; default: the data map's partners.
    """
    if partner_systems is None:
        partner_systems = partner_system_keys()
    rows = ledger.system_results(request_id)
    return sorted({r.system for r in rows if r.system in partner_systems and r.status in OWED_SYSTEM_STATUSES})


def current_deadline(ledger: Ledger, row: RequestRow, now: datetime) -> datetime:
    """The deadline in force: ``row.effective_due_at`` moved by counted pauses."""
    from include.dsr.sla.rules import effective_deadline

    return effective_deadline(row, ledger.events(row.request_id), now)


def partner_system_keys() -> frozenset[str]:
    """Keys of the data map's partner systems (payment and manufacturing partners)."""
    from include.dsr.core.data_map import load_data_map

    return frozenset(s.key for s in load_data_map().partners())
