"""Read-only compliance figures over the request ledger, for the "DSR compliance" dashboard.

Plain SQLAlchemy Core on the ledger tables (SQLite and PostgreSQL), a fixed number of
queries whatever the number of requests; rows come back as typed dataclasses. Nothing here
writes, and nothing here is personal data: request ids, rights, dates, counts and partner
system keys.

- *open* requests (:func:`open_requests`, also what the SLA monitor alerts on): no
  ``closed_at``. The deadline in force is :func:`include.dsr.sla.rules.effective_deadline`
  (extended if extended, moved by counted identity-verification pauses); status and days
  left come from :mod:`include.dsr.sla.status`.
- *volume*: requests per right per calendar month of ``received_at``, in the controller's
  time zone (the calendar the deadlines use).
- answered within 1 / 3 months and median time to close: see :mod:`include.dsr.sla.kpis`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, select
from sqlalchemy.engine import make_url

from include.dsr.core.errors import TerminalError
from include.dsr.ledger.schema import (
    RIGHTS,
    EventRow,
    RequestRow,
    dsr_events,
    dsr_request_systems,
    dsr_requests,
)
from include.dsr.sla import deadlines as sla
from include.dsr.sla import rules as sla_rules
from include.dsr.sla import status as sla_status
from include.dsr.sla.kpis import (
    WINDOWS,
    Outcome,
    WindowShare,
    median_days_to_close,
    window_share,
)

__all__ = [
    "ComplianceReport",
    "MonthlyVolume",
    "OpenRequest",
    "WindowShare",
    "compliance_report",
    "iso",
    "open_requests",
    "read_only_engine",
]

#: SLA statuses an open request can have, most urgent first.
OPEN_STATUSES = (sla_status.BREACHED, sla_status.AT_RISK, sla_status.ON_TRACK)
#: Events of an open request that its row needs: pauses move the deadline, notices tell
#: whether the subject was acknowledged.
_OPEN_EVENTS = (sla_rules.PAUSED, sla_rules.RESUMED, sla_rules.NOTICE_SENT)
#: ``kind`` of the ``notice.sent`` event of the acknowledgement to the subject.
_ACKNOWLEDGEMENT = "acknowledgement"


def iso(moment: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class OpenRequest:
    """One open request as the dashboard lists it and the SLA monitor alerts on it."""

    request_id: str
    right: str
    jurisdiction: str
    ledger_status: str
    received_at: datetime
    #: The deadline in force (extension and counted pauses applied).
    due_at: datetime
    extended: bool
    paused: bool
    days_left: int
    #: ``breached``, ``at_risk`` or ``on_track``.
    status: str
    partners_owed: tuple[str, ...]
    #: CCPA only: acknowledgement due by (10 business days); None under GDPR.
    acknowledge_by: datetime | None = None
    #: The acknowledgement notice was sent to the subject.
    acknowledged: bool = False

    def as_json(self) -> dict[str, Any]:
        """JSON-ready dict of every field (timestamps ISO-8601 UTC, ``partners_owed`` a list)."""
        values = asdict(self)
        values.update(
            received_at=iso(self.received_at),
            due_at=iso(self.due_at),
            partners_owed=list(self.partners_owed),
            acknowledge_by=iso(self.acknowledge_by) if self.acknowledge_by else None,
        )
        return values


@dataclass(frozen=True)
class MonthlyVolume:
    """Requests received in one calendar month (``YYYY-MM``, controller time), per right."""

    month: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        """Requests of every right received that month."""
        return sum(self.counts.values())


@dataclass(frozen=True)
class ComplianceReport:
    """Every figure of the dashboard, computed at ``generated_at``."""

    generated_at: datetime
    at_risk_days: int
    #: Most urgent first: fewest days left, then the earliest deadline, then the id.
    open_requests: tuple[OpenRequest, ...]
    volume: tuple[MonthlyVolume, ...]
    #: ``1m`` and ``3m`` shares (see :mod:`include.dsr.sla.kpis`).
    shares: dict[str, WindowShare]
    answered: int
    median_days_to_close: float | None
    closed_by_status: dict[str, int]
    #: Closed requests by what the answer was (data provided, no personal data found, with exceptions, ...).
    closed_by_outcome: dict[str, int] = field(default_factory=dict)

    @property
    def breached(self) -> list[OpenRequest]:
        """Open requests past their deadline, most overdue first."""
        return [row for row in self.open_requests if row.status == sla_status.BREACHED]

    @property
    def at_risk(self) -> list[OpenRequest]:
        """Open requests with fewer than ``at_risk_days`` days left, most urgent first."""
        return [row for row in self.open_requests if row.status == sla_status.AT_RISK]

    @property
    def on_track(self) -> list[OpenRequest]:
        """Open requests neither breached nor at risk."""
        return [row for row in self.open_requests if row.status == sla_status.ON_TRACK]

    def open_counts(self) -> dict[tuple[str, str], int]:
        """Open requests per ``(right, SLA status)``, zero for every combination not present."""
        counts = Counter((row.right, row.status) for row in self.open_requests)
        return {(right, status): counts[(right, status)] for right in RIGHTS for status in OPEN_STATUSES}


def read_only_engine(url: str) -> Engine:
    """An engine on the ledger that cannot write to it.

    SQLite is opened with ``mode=ro`` (a missing file is an error, not a new empty
    ledger); PostgreSQL runs every transaction ``READ ONLY``.

    :param url: SQLAlchemy URL of the ledger (``sqlite`` or ``postgresql``).
    :raises TerminalError: another backend, or an in-memory SQLite URL.
    """
    url_obj = make_url(url)
    backend = url_obj.get_backend_name()
    if backend == "sqlite":
        if not url_obj.database or url_obj.database == ":memory:":
            raise TerminalError(f"the ledger URL {url_obj!r} names no SQLite file")
        ro_url = url_obj.set(database=f"file:{url_obj.database}", query={"mode": "ro", "uri": "true"})
        return create_engine(ro_url, connect_args={"timeout": 30})
    if backend == "postgresql":
        return create_engine(url_obj, pool_pre_ping=True, execution_options={"postgresql_readonly": True})
    raise TerminalError(f"the ledger supports sqlite and postgresql, not {backend!r}")


def open_requests(
    engine: Engine,
    now: datetime | None = None,
    at_risk_days: int = sla_status.DEFAULT_AT_RISK_DAYS,
    partner_systems: Collection[str] | None = None,
) -> tuple[OpenRequest, ...]:
    """The open requests, most urgent first, as :func:`compliance_report` lists them (three queries).

    :param engine: engine of the ledger database (``Ledger.engine`` or :func:`read_only_engine`).
    :param now: the moment the status is for; default the current time.
    :param at_risk_days: an open request with fewer days left than this is at risk.
    :param partner_systems: keys of partner systems (whose replies can be owed);
        default: the data map's partners.
    :raises ValueError: ``now`` is naive.
    """
    now = _aware_now(now)
    if partner_systems is None:
        partner_systems = sla_status.partner_system_keys()
    with engine.connect() as conn:
        return _read_open_requests(conn, now, at_risk_days, partner_systems)


def compliance_report(
    engine: Engine,
    now: datetime | None = None,
    at_risk_days: int = sla_status.DEFAULT_AT_RISK_DAYS,
    partner_systems: Collection[str] | None = None,
    months: int = 12,
) -> ComplianceReport:
    """Compute every dashboard figure in one read of the ledger (five queries).

    :param engine: engine of the ledger database (``Ledger.engine`` or :func:`read_only_engine`).
    :param now: the moment the figures are for; default the current time.
    :param at_risk_days: an open request with fewer days left than this is at risk.
    :param partner_systems: keys of partner systems (whose replies can be owed);
        default: the data map's partners.
    :param months: calendar months of volume, ending with the month of ``now``.
    :raises ValueError: ``now`` is naive.
    """
    now = _aware_now(now)
    if partner_systems is None:
        partner_systems = sla_status.partner_system_keys()
    month_keys, window_start = _months(now, months)
    requests = dsr_requests.c
    with engine.connect() as conn:
        open_rows = _read_open_requests(conn, now, at_risk_days, partner_systems)
        received = conn.execute(
            select(requests.right, requests.received_at).where(requests.received_at >= window_start)
        ).all()
        outcomes = [
            Outcome.from_mapping(row)
            for row in conn.execute(select(*(requests[name] for name in Outcome.COLUMNS))).mappings()
        ]
    return ComplianceReport(
        generated_at=now.astimezone(UTC),
        at_risk_days=at_risk_days,
        open_requests=open_rows,
        volume=tuple(_volume(((row.right, row.received_at) for row in received), month_keys)),
        shares={window: window_share(window, outcomes, now) for window in WINDOWS},
        answered=sum(row.answered for row in outcomes),
        median_days_to_close=median_days_to_close(outcomes),
        closed_by_status=dict(Counter(row.status for row in outcomes if row.closed_at is not None)),
        closed_by_outcome=dict(Counter(row.outcome or row.status for row in outcomes if row.closed_at is not None)),
    )


def _aware_now(now: datetime | None) -> datetime:
    now = now or datetime.now(UTC)
    if now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now


def _read_open_requests(
    conn: Connection, now: datetime, at_risk_days: int, partner_systems: Collection[str]
) -> tuple[OpenRequest, ...]:
    """Open requests, most urgent first: fewest days left, then the earliest deadline, then the id."""
    query = select(dsr_requests).where(dsr_requests.c.closed_at.is_(None))
    rows = [RequestRow.from_mapping(row) for row in conn.execute(query).mappings()]
    owed = _owed_partners(conn, partner_systems)
    return tuple(_open_requests(rows, _open_request_events(conn), owed, now, at_risk_days))


def _open_requests(
    rows: Iterable[RequestRow],
    open_events: dict[str, list[EventRow]],
    owed: dict[str, tuple[str, ...]],
    now: datetime,
    at_risk_days: int,
) -> list[OpenRequest]:
    result = []
    for row in rows:
        events = open_events.get(row.request_id, [])
        deadline = sla_rules.effective_deadline(row, events, now)
        recorded = sla_rules.pauses(events)
        result.append(
            OpenRequest(
                request_id=row.request_id,
                right=row.right,
                jurisdiction=row.jurisdiction,
                ledger_status=row.status,
                received_at=row.received_at,
                due_at=deadline,
                extended=row.extended_due_at is not None,
                paused=bool(recorded) and recorded[-1].resumed_at is None,
                days_left=sla_status.days_left(row, now, deadline=deadline),
                status=sla_status.request_status(row, now, at_risk_days, deadline=deadline),
                partners_owed=owed.get(row.request_id, ()),
                acknowledge_by=sla.acknowledge_by(row.received_at, row.jurisdiction),
                acknowledged=any(
                    e.event_type == sla_rules.NOTICE_SENT and e.payload.get("kind") == _ACKNOWLEDGEMENT for e in events
                ),
            )
        )
    return sorted(result, key=lambda r: (r.days_left, r.due_at, r.request_id))


def _open_request_events(conn: Connection) -> dict[str, list[EventRow]]:
    """Pause, resume and notice events of the open requests, per request, in chain order."""
    query = (
        select(dsr_events)
        .join(dsr_requests, dsr_requests.c.request_id == dsr_events.c.request_id)
        .where(dsr_requests.c.closed_at.is_(None), dsr_events.c.event_type.in_(_OPEN_EVENTS))
        .order_by(dsr_events.c.seq)
    )
    events: dict[str, list[EventRow]] = defaultdict(list)
    for row in conn.execute(query).mappings():
        event = EventRow.from_mapping(row)
        if event.request_id is not None:
            events[event.request_id].append(event)
    return events


def _owed_partners(conn: Connection, partner_systems: Collection[str]) -> dict[str, tuple[str, ...]]:
    """Partner systems still owing a reply (row pending or waiting), per open request."""
    systems = dsr_request_systems.c
    query = (
        select(systems.request_id, systems.system)
        .join(dsr_requests, dsr_requests.c.request_id == systems.request_id)
        .where(
            dsr_requests.c.closed_at.is_(None),
            systems.status.in_(sla_status.OWED_SYSTEM_STATUSES),
            systems.system.in_(sorted(partner_systems)),
        )
    )
    owed: dict[str, set[str]] = defaultdict(set)
    for row in conn.execute(query):
        owed[row.request_id].add(row.system)
    return {request_id: tuple(sorted(names)) for request_id, names in owed.items()}


def _volume(received: Iterable[tuple[str, datetime]], month_keys: list[str]) -> list[MonthlyVolume]:
    counts: dict[str, Counter[str]] = {month: Counter() for month in month_keys}
    for right, received_at in received:
        month = received_at.astimezone(sla.CONTROLLER_TZ).strftime("%Y-%m")
        if month in counts:
            counts[month][right] += 1
    return [
        MonthlyVolume(month=month, counts={right: counter[right] for right in RIGHTS})
        for month, counter in counts.items()
    ]


def _months(now: datetime, months: int) -> tuple[list[str], datetime]:
    """Keys (``YYYY-MM``, oldest first) of the ``months`` months ending with the month of
    ``now`` in controller time, and the start of the first one (local midnight, as UTC)."""
    this_month = now.astimezone(sla.CONTROLLER_TZ).date().replace(day=1)
    firsts = [sla.add_months(this_month, -offset) for offset in range(months - 1, -1, -1)]
    start = datetime.combine(firsts[0], time(0), tzinfo=sla.CONTROLLER_TZ).astimezone(UTC)
    return [first.strftime("%Y-%m") for first in firsts], start
