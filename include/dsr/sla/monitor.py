"""What the ``dsr_sla_monitor`` DAG does each hour: assess, alert ops, publish figures.

The figures are the compliance dashboard's (:mod:`include.dsr.sla.reports`): one
definition of an open request's status and of the "answered within 1 / 3 months" shares.

- :func:`assess` lists every open request with its status (deadline in force with
  extensions and counted pauses, days left, partners still owing a reply).
- :func:`alert_ops` sends one ``at_risk`` and one ``breached`` alert per request and
  deadline in force (idempotent through ledger dedupe keys: two runs, one mail).
- :func:`snapshot` / :func:`publish_snapshot` write the figures for the dashboard to
  ``s3://<exports bucket>/_dashboard/sla.json`` (overwritten each run; ids and counts only).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.dsr.sla import status as sla_status
from include.dsr.sla.kpis import WINDOWS
from include.dsr.sla.reports import OPEN_STATUSES, iso, open_requests

if TYPE_CHECKING:
    from include.dsr.ledger.api import Ledger
    from include.dsr.notify.notices import Notices
    from include.dsr.sla.reports import ComplianceReport, OpenRequest

log = logging.getLogger(__name__)

SNAPSHOT_KEY = "_dashboard/sla.json"
VAR_AT_RISK_DAYS = "dsr_at_risk_days"
ALERTED_STATUSES = (sla_status.AT_RISK, sla_status.BREACHED)


def at_risk_days() -> int:
    """Airflow Variable ``dsr_at_risk_days`` (default 7)."""
    from include.dsr.connections import variable

    value = variable(VAR_AT_RISK_DAYS, str(sla_status.DEFAULT_AT_RISK_DAYS))
    try:
        return int(value)
    except ValueError:
        log.warning("Variable %s is not an integer; using %s", VAR_AT_RISK_DAYS, sla_status.DEFAULT_AT_RISK_DAYS)
        return sla_status.DEFAULT_AT_RISK_DAYS


def assess(
    ledger: Ledger,
    now: datetime,
    risk_days: int = sla_status.DEFAULT_AT_RISK_DAYS,
    partner_systems: Collection[str] | None = None,
) -> list[OpenRequest]:
    """Every open request as the dashboard lists it, most urgent first."""
    assessed = list(open_requests(ledger.engine, now, risk_days, partner_systems))
    log.info("sla monitor: %s open requests assessed", len(assessed))
    return assessed


def alert_ops(notices: Notices, assessed: Iterable[OpenRequest], ops_address: str | None = None) -> dict[str, int]:
    """One alert per at-risk / breached request and deadline; returns counts per status."""
    sent: Counter[str] = Counter()
    for item in assessed:
        if item.status not in ALERTED_STATUSES:
            continue
        event = notices.ops_alert(
            item.request_id, item.status, item.due_at, item.days_left, item.partners_owed, ops_address=ops_address
        )
        sent[item.status] += 1
        log.info(
            "sla monitor: request %s is %s (alert event seq %s)",
            item.request_id,
            item.status,
            event.seq if event else "recorded with the batch",
        )
    return {status: sent[status] for status in ALERTED_STATUSES}


def snapshot(report: ComplianceReport) -> dict[str, Any]:
    """Figures for the dashboard: open requests and their count per status, answered-in-time shares."""
    counts = Counter(row.status for row in report.open_requests)
    return {
        "generated_at": iso(report.generated_at),
        "at_risk_days": report.at_risk_days,
        "counts": {status: counts[status] for status in OPEN_STATUSES},
        "open": [row.as_json() for row in report.open_requests],
        "answered": report.answered,
        "closed_by_status": report.closed_by_status,
        "closed_by_outcome": report.closed_by_outcome,
        "answered_within": {window: report.shares[window].as_json() for window in WINDOWS},
        "median_days_to_close": report.median_days_to_close,
    }


def publish_snapshot(s3: Any, bucket: str, figures: dict[str, Any]) -> str:
    """Write ``figures`` to ``s3://<bucket>/_dashboard/sla.json``; returns the key."""
    body = json.dumps(figures, sort_keys=True, indent=1).encode()
    s3.put_object(Bucket=bucket, Key=SNAPSHOT_KEY, Body=body, ContentType="application/json")
    log.info("sla monitor: snapshot of %s open requests written to %s", len(figures["open"]), SNAPSHOT_KEY)
    return SNAPSHOT_KEY


def _utcnow() -> datetime:
    return datetime.now(UTC)
