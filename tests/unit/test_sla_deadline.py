"""The right DAGs' Deadline Alert: reference from the run conf, plugin registration, callback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from include.dsr.orchestration import deadline_callbacks
from include.dsr.orchestration.deadline_alert import (
    RequestDueDeadline,
    request_deadline,
    request_deadline_alert,
)
from include.dsr.sla import deadlines as sla
from include.dsr.sla import rules as sla_rules
from tests.unit.sla_helpers import OPS_EMAIL, record

TRIGGERED = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        pytest.param(
            {"received_at": "2026-03-05T09:00:00Z"},
            sla.due_at(datetime(2026, 3, 5, 9, tzinfo=UTC)),
            id="received_at with Z",
        ),
        pytest.param(
            {"received_at": "2026-03-05T23:30:00-01:00", "jurisdiction": "GDPR"},
            sla.due_at(datetime(2026, 3, 6, 0, 30, tzinfo=UTC)),
            id="received_at with an offset",
        ),
        pytest.param(
            {"received_at": "2026-01-05T10:00:00+01:00", "jurisdiction": "CCPA"},
            sla.due_at(datetime(2026, 1, 5, 9, tzinfo=UTC), "CCPA"),
            id="CCPA: 45 days",
        ),
        pytest.param({}, sla.due_at(TRIGGERED), id="no received_at: the run's trigger time"),
        pytest.param({"received_at": None}, sla.due_at(TRIGGERED), id="null received_at: the run's trigger time"),
        pytest.param({"received_at": "yesterday"}, None, id="malformed received_at: no deadline"),
        pytest.param({"received_at": "2026-03-05T09:00:00"}, None, id="naive received_at: no deadline"),
        pytest.param({"received_at": 12}, None, id="not a string: no deadline"),
        pytest.param({"jurisdiction": "LGPD"}, None, id="unknown jurisdiction: no deadline"),
        pytest.param(None, sla.due_at(TRIGGERED), id="no conf at all"),
    ],
)
def test_request_deadline_from_conf(conf, expected):
    assert request_deadline(conf, TRIGGERED) == expected


def test_alert_shape():
    alert = request_deadline_alert()
    assert isinstance(alert.reference, RequestDueDeadline)
    assert alert.interval == timedelta(0)
    assert alert.callback.path == "include.dsr.orchestration.deadline_callbacks.notify_deadline_missed"
    assert RequestDueDeadline.required_kwargs == {"dag_id", "run_id"}


def test_reference_serialises_with_its_class_path_and_the_plugin_registers_it():
    from airflow import plugins_manager
    from airflow.serialization.decoders import decode_deadline_alert
    from airflow.serialization.encoders import encode_deadline_alert

    encoded = encode_deadline_alert(request_deadline_alert())
    decoded = decode_deadline_alert(encoded)
    assert decoded.reference.reference_name == "RequestDueDeadline"
    assert (
        "include.dsr.orchestration.deadline_alert.RequestDueDeadline"
        in plugins_manager.get_deadline_references_plugins()
    )


def _context(request_id: str | None, dag_id: str = "dsr_access") -> dict:
    """What Deadline.handle_miss passes: the run as the REST API shows it, and the deadline."""
    conf = {"subject": {"email": "maria.lopez@example.com"}}
    if request_id:
        conf["request_id"] = request_id
    return {
        "dag_run": {"dag_id": dag_id, "dag_run_id": f"manual__{request_id}", "conf": conf},
        "deadline": {"id": "0198", "deadline_time": "2026-04-07T21:59:59Z"},
    }


def test_missed_deadline_alerts_ops_once(ledger, clock, sink):
    received = clock.now - timedelta(days=40)
    record(ledger, "REQ-LATE", received)
    ledger.upsert_system_result("REQ-LATE", "payflow", "export", "waiting")
    for _ in range(2):
        outcome = deadline_callbacks.handle_deadline_missed(
            _context("REQ-LATE"), ledger=ledger, ops_address=OPS_EMAIL, clock=clock
        )
        assert outcome == "alerted"
    [mail] = sink.messages()
    assert mail["To"] == OPS_EMAIL
    assert mail["Subject"].startswith("[DSR deadline missed] REQ-LATE")
    body = mail.get_body(("html",)).get_content()
    assert "payflow" in body
    assert "dsr_access / manual__REQ-LATE" in body
    assert "maria.lopez" not in body
    [event] = [e for e in ledger.events("REQ-LATE") if e.event_type == "ops.alert_sent"]
    assert event.payload["kind"] == "deadline_missed"


@pytest.mark.parametrize(
    ("prepare", "expected"),
    [
        pytest.param(
            lambda lg, now: lg.close_request("REQ-1", "completed", now, "answered"), "closed", id="closed request"
        ),
        pytest.param(
            lambda lg, now: lg.extend("REQ-1", now + timedelta(days=30), "complex"),
            "deadline_moved",
            id="extended since the run started",
        ),
        pytest.param(
            lambda lg, now: sla_rules.pause_clock(lg, "REQ-1", "asked for order number", now - timedelta(days=31)),
            "deadline_moved",
            id="paused without undue delay, still paused",
        ),
    ],
)
def test_no_alert_when_the_ledger_says_otherwise(ledger, clock, sink, prepare, expected):
    record(ledger, "REQ-1", clock.now - timedelta(days=32))
    prepare(ledger, clock.now)
    assert (
        deadline_callbacks.handle_deadline_missed(_context("REQ-1"), ledger=ledger, ops_address=OPS_EMAIL, clock=clock)
        == expected
    )
    assert sink.messages() == []


@pytest.mark.parametrize(
    "request_id",
    [
        pytest.param(None, id="run without request_id"),
        pytest.param("REQ-UNKNOWN", id="request refused at intake, never recorded"),
    ],
)
def test_nothing_to_alert(ledger, clock, sink, request_id):
    assert deadline_callbacks.handle_deadline_missed(_context(request_id), ledger=ledger, clock=clock) == "not_recorded"
    assert sink.messages() == []


def test_async_callback_runs_the_handler_in_a_thread(monkeypatch):
    seen = []
    monkeypatch.setattr(deadline_callbacks, "handle_deadline_missed", lambda ctx: seen.append(ctx) or "alerted")
    context = _context("REQ-1")
    assert asyncio.run(deadline_callbacks.notify_deadline_missed(context=context)) == "alerted"
    assert seen == [context]


@pytest.mark.parametrize("dag_id", ["dsr_access", "dsr_portability"])
def test_right_dags_declare_the_request_deadline_alert(dag_id):
    from airflow.dag_processing.dagbag import DagBag

    from include import settings

    dag = DagBag(dag_folder=str(settings.PROJECT_ROOT / "dags" / f"{dag_id}.py")).dags[dag_id]
    [alert] = dag.deadline
    assert isinstance(alert.reference, RequestDueDeadline)
    assert alert.interval == timedelta(0)
