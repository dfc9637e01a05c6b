"""The monitor's logic: assess open requests, alert ops once, summarise for the dashboard."""

from __future__ import annotations

from datetime import timedelta

import pytest

from include.dsr.notify.notices import Notices
from include.dsr.sla import monitor as sla_monitor
from include.dsr.sla import rules as sla_rules
from include.dsr.sla.reports import compliance_report
from tests.unit.sla_helpers import CONTROLLER, OPS_EMAIL, record

PARTNERS = {"payflow", "cardworks"}


@pytest.fixture
def requests(ledger, clock):
    """NOW is Wed 25 Nov 2026: on track, at risk (due Mon 30 Nov), breached, paused, closed, CCPA."""
    now = clock.now
    record(ledger, "ON-TRACK", now - timedelta(days=2))
    record(ledger, "AT-RISK", now - timedelta(days=27))  # received 29 Oct -> due 30 Nov
    ledger.upsert_system_result("AT-RISK", "payflow", "export", "waiting")
    ledger.upsert_system_result("AT-RISK", "cardworks", "export", "completed", record_count=1)
    record(ledger, "BREACHED", now - timedelta(days=45))
    record(ledger, "PAUSED", now - timedelta(days=29))
    sla_rules.pause_clock(ledger, "PAUSED", "asked for the order number", now - timedelta(days=28))
    record(ledger, "CLOSED", now - timedelta(days=60))
    ledger.close_request("CLOSED", "completed", now - timedelta(days=40), "answered")
    record(ledger, "CCPA-1", now - timedelta(days=20), jurisdiction="CCPA")
    return now


def test_assess_open_requests(ledger, requests):
    assessed = {a.request_id: a for a in sla_monitor.assess(ledger, requests, 7, PARTNERS)}
    assert {rid: a.status for rid, a in assessed.items()} == {
        "ON-TRACK": "on_track",
        "AT-RISK": "at_risk",
        "BREACHED": "breached",
        "PAUSED": "on_track",
        "CCPA-1": "on_track",
    }
    assert assessed["AT-RISK"].days_left == 5
    assert assessed["AT-RISK"].partners_owed == ("payflow",)
    assert assessed["PAUSED"].paused
    assert assessed["BREACHED"].days_left < 0
    ccpa = assessed["CCPA-1"]
    assert ccpa.acknowledge_by is not None
    assert ccpa.acknowledged is False
    assert assessed["ON-TRACK"].acknowledge_by is None


def test_alerts_are_sent_once_across_runs(ledger, requests, sink):
    notices = Notices(ledger, controller=CONTROLLER)
    for _ in range(2):
        counts = sla_monitor.alert_ops(notices, sla_monitor.assess(ledger, requests, 7, PARTNERS), OPS_EMAIL)
        assert counts == {"at_risk": 1, "breached": 1}
    subjects = sorted(m["Subject"].split(" due ")[0] for m in sink.messages())
    assert subjects == ["[DSR at risk] AT-RISK", "[DSR breached] BREACHED"]


def test_snapshot_figures(ledger, requests):
    figures = sla_monitor.snapshot(compliance_report(ledger.engine, requests, 7, PARTNERS))
    assert figures["counts"] == {"on_track": 3, "at_risk": 1, "breached": 1}
    assert figures["closed_by_status"] == {"completed": 1}
    assert figures["answered"] == 1
    # BREACHED is past its 1-month window unanswered: eligible, not in time (the dashboard's definition)
    assert figures["answered_within"]["1m"] == {"answered_in_time": 1, "eligible": 2, "ratio": 0.5}
    assert figures["answered_within"]["3m"] == {"answered_in_time": 1, "eligible": 1, "ratio": 1.0}
    assert {item["request_id"] for item in figures["open"]} == {"ON-TRACK", "AT-RISK", "BREACHED", "PAUSED", "CCPA-1"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, 7, id="unset: 7"),
        pytest.param("10", 10, id="set: 10"),
        pytest.param("soon", 7, id="not a number: 7"),
    ],
)
def test_at_risk_days_variable(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("AIRFLOW_VAR_DSR_AT_RISK_DAYS", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW_VAR_DSR_AT_RISK_DAYS", value)
    assert sla_monitor.at_risk_days() == expected


def test_monitor_dag_is_thin_and_hourly():
    from airflow.dag_processing.dagbag import DagBag

    from include import settings

    bag = DagBag(dag_folder=str(settings.PROJECT_ROOT / "dags" / "dsr_sla_monitor.py"))
    assert bag.import_errors == {}
    dag = bag.dags["dsr_sla_monitor"]
    assert dag.schedule == "@hourly"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {"dsr", "gdpr", "sla"} <= set(dag.tags)
    assert "dsr_sla_monitor" in dag.doc_md
    assert [t.task_id for t in dag.tasks] == ["alert_ops", "publish_snapshot", "purge_metadata"]
    assert all(t.retries >= 1 for t in dag.tasks)
