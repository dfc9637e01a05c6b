"""Task bodies of the ``dsr_sla_monitor`` DAG: wire the runtime to :mod:`include.dsr.sla.monitor`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def _utcnow() -> datetime:
    return datetime.now(UTC)


def alert_open_requests(now: datetime | None = None) -> dict[str, int]:
    """Assess every open request and alert ops about the at-risk and breached ones."""
    from include.dsr.notify.notices import Notices
    from include.dsr.rights.runtime import Runtime
    from include.dsr.sla.monitor import alert_ops, assess, at_risk_days

    rt = Runtime.from_airflow()
    now = now or _utcnow()
    assessed = assess(rt.ledger, now, at_risk_days(), partner_system_keys(rt))
    return alert_ops(Notices(rt.ledger, controller=rt.data_map.controller), assessed)


def publish_figures(now: datetime | None = None) -> str:
    """Write the dashboard snapshot; returns its S3 key."""
    from include.dsr.rights.runtime import Runtime
    from include.dsr.sla.monitor import at_risk_days, publish_snapshot, snapshot
    from include.dsr.sla.reports import compliance_report

    rt = Runtime.from_airflow()
    now = now or _utcnow()
    figures = snapshot(compliance_report(rt.ledger.engine, now, at_risk_days(), partner_system_keys(rt)))
    return publish_snapshot(rt.s3, rt.exports_bucket, figures)


def partner_system_keys(rt: Any) -> frozenset[str]:
    """Partner system keys of the runtime's data map."""
    return frozenset(s.key for s in rt.data_map.partners())


def purge_closed_requests() -> dict[str, int]:
    """Remove closed requests' identities from the Airflow metadata DB (see :mod:`.metadata_purge`)."""
    from include.dsr.orchestration.metadata_purge import sweep_closed_requests
    from include.dsr.rights.runtime import Runtime

    return sweep_closed_requests(Runtime.from_airflow().ledger)
