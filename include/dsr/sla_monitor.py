"""What the ``dsr_sla_monitor`` DAG does each hour: assess, alert ops, publish figures.

- :func:`assess` recomputes every open request's status from the ledger (deadline in force
  with extensions and counted pauses, days left, partners still owing a reply).
- :func:`alert_ops` sends one ``at_risk`` and one ``breached`` alert per request and
  deadline in force (idempotent through ledger dedupe keys: two runs, one mail).
- :func:`snapshot` / :func:`publish_snapshot` write the figures for the dashboard to
  ``s3://<exports bucket>/_dashboard/sla.json`` (overwritten each run; ids and counts only).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from include.dsr import sla, sla_status

if TYPE_CHECKING:
    from include.dsr.ledger import Ledger
    from include.dsr.notices import Notices

log = logging.getLogger(__name__)

SNAPSHOT_KEY = "_dashboard/sla.json"
NOTICE_EVENT = "notice.sent"
VAR_AT_RISK_DAYS = "dsr_at_risk_days"
ALERTED_STATUSES = (sla_status.AT_RISK, sla_status.BREACHED)


@dataclass(frozen=True)
class RequestSla:
    """The SLA view of one open request (ids, dates and counts only)."""

    request_id: str
    right: str
    jurisdiction: str
    ledger_status: str
    status: str
    received_at: datetime
    deadline: datetime
    days_left: int
    extended: bool
    paused: bool
    owed_partners: list[str]
    #: CCPA only: acknowledgement due by (10 business days); None under GDPR.
    acknowledge_by: datetime | None = None
    acknowledged: bool = False

    def as_json(self) -> dict[str, Any]:
        """JSON-ready dict (ISO datetimes)."""
        values = asdict(self)
        values.update(received_at=self.received_at.isoformat(), deadline=self.deadline.isoformat(),
                      acknowledge_by=self.acknowledge_by.isoformat() if self.acknowledge_by else None)
        return values


def at_risk_days() -> int:
    """Airflow Variable ``dsr_at_risk_days`` (default 7)."""
    from airflow.sdk import Variable

    value = Variable.get(VAR_AT_RISK_DAYS, default=str(sla_status.DEFAULT_AT_RISK_DAYS))
    try:
        return int(value)
    except ValueError:
        log.warning("Variable %s is not an integer; using %s", VAR_AT_RISK_DAYS, sla_status.DEFAULT_AT_RISK_DAYS)
        return sla_status.DEFAULT_AT_RISK_DAYS


def assess(ledger: Ledger, now: datetime, risk_days: int = sla_status.DEFAULT_AT_RISK_DAYS,
           partner_systems: Collection[str] | None = None) -> list[RequestSla]:
    """The SLA view of every open request, ordered by ``received_at``."""
    from include.dsr.sla_rules import effective_deadline, pauses

    if partner_systems is None:
        partner_systems = sla_status.partner_system_keys()
    assessed = []
    for row in ledger.list_requests(open_only=True):
        events = ledger.events(row.request_id)
        deadline = effective_deadline(row, events, now)
        status = sla_status.request_status(row, now, risk_days, deadline=deadline)
        owed = sla_status.owed_partners(ledger, row.request_id, partner_systems) if status in ALERTED_STATUSES else []
        recorded = pauses(events)
        acknowledged = any(e.event_type == NOTICE_EVENT and e.payload.get("kind") == "acknowledgement"
                           for e in events)
        assessed.append(RequestSla(
            request_id=row.request_id, right=row.right, jurisdiction=row.jurisdiction, ledger_status=row.status,
            status=status, received_at=row.received_at, deadline=deadline,
            days_left=sla_status.days_left(row, now, deadline=deadline), extended=row.extended_due_at is not None,
            paused=bool(recorded) and recorded[-1].resumed_at is None, owed_partners=owed,
            acknowledge_by=sla.acknowledge_by(row.received_at, row.jurisdiction), acknowledged=acknowledged,
        ))
    log.info("sla monitor: %s open requests assessed", len(assessed))
    return assessed


def alert_ops(notices: Notices, assessed: list[RequestSla], ops_address: str | None = None) -> dict[str, int]:
    """One alert per at-risk / breached request and deadline; returns counts per status."""
    sent: Counter[str] = Counter()
    for item in assessed:
        if item.status not in ALERTED_STATUSES:
            continue
        event = notices.ops_alert(item.request_id, item.status, item.deadline, item.days_left,
                                  item.owed_partners, ops_address=ops_address)
        sent[item.status] += 1
        log.info("sla monitor: request %s is %s (alert event seq %s)", item.request_id, item.status, event.seq)
    return {status: sent[status] for status in ALERTED_STATUSES}


def snapshot(ledger: Ledger, assessed: list[RequestSla], now: datetime, risk_days: int) -> dict[str, Any]:
    """Figures for the dashboard: counts per status, open requests, answered-in-time shares."""
    counts = Counter(item.status for item in assessed)
    closed = [row for row in ledger.list_requests() if row.closed_at is not None]
    within_one = sum(1 for row in closed if row.closed_at <= row.due_at)
    within_three = sum(1 for row in closed
                       if row.closed_at <= sla.due_at(row.received_at, row.jurisdiction, extended=True))
    return {
        "generated_at": now.isoformat(),
        "at_risk_days": risk_days,
        "counts": {status: counts.get(status, 0) for status in sla_status.STATUSES if status != sla_status.CLOSED},
        "open": [item.as_json() for item in assessed],
        "closed_total": len(closed),
        "answered_within_1_month": within_one,
        "answered_within_3_months": within_three,
    }


def publish_snapshot(s3: Any, bucket: str, figures: dict[str, Any]) -> str:
    """Write ``figures`` to ``s3://<bucket>/_dashboard/sla.json``; returns the key."""
    body = json.dumps(figures, sort_keys=True, indent=1).encode()
    s3.put_object(Bucket=bucket, Key=SNAPSHOT_KEY, Body=body, ContentType="application/json")
    log.info("sla monitor: snapshot of %s open requests written to %s", len(figures["open"]), SNAPSHOT_KEY)
    return SNAPSHOT_KEY


# -- task entry points (the DAG's task bodies call these) ---------------------------------


def alert_open_requests(now: datetime | None = None) -> dict[str, int]:
    """Assess every open request and alert ops about the at-risk and breached ones."""
    from include.dsr.notices import Notices
    from include.dsr.runtime import Runtime

    rt = Runtime.from_airflow()
    now = now or _utcnow()
    assessed = assess(rt.ledger, now, at_risk_days(), partner_system_keys(rt))
    return alert_ops(Notices(rt.ledger, controller=rt.data_map.controller), assessed)


def publish_figures(now: datetime | None = None) -> str:
    """Write the dashboard snapshot; returns its S3 key."""
    from include.dsr.runtime import Runtime

    rt = Runtime.from_airflow()
    now = now or _utcnow()
    risk_days = at_risk_days()
    figures = snapshot(rt.ledger, assess(rt.ledger, now, risk_days, partner_system_keys(rt)), now, risk_days)
    return publish_snapshot(rt.s3, rt.exports_bucket, figures)


def partner_system_keys(rt: Any) -> frozenset[str]:
    """Partner system keys of the runtime's data map."""
    return frozenset(s.key for s in rt.data_map.partners())


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)
