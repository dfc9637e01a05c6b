"""``dsr_sla_monitor`` against a ledger with known requests, and the right DAGs' Deadline Alert.

Three requests are recorded with ``received_at`` in the past: one on track, one at risk
(a partner still owes its reply), one breached. Two monitor runs send exactly one at-risk
and one breached mail (read back from the SMTP sink's .eml files) and publish the figures
for the dashboard.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from include import constants
from include.demo.smtp_sink import SmtpSink
from include.dsr.ledger.api import subject_fingerprint
from include.dsr.sla import deadlines as sla
from include.dsr.sla import status as sla_status
from tests.e2e.conftest import load_dag
from tests.e2e.helpers import ledger
from tests.support import free_port, smtp_connection

pytestmark = pytest.mark.slow

OPS = "sla-desk@example.com"


@pytest.fixture
def sink(tmp_path, monkeypatch):
    server = SmtpSink(port=free_port(), mail_dir=tmp_path / "mail").start()
    monkeypatch.setenv("AIRFLOW_CONN_DSR_SMTP", smtp_connection(server.port))
    monkeypatch.setenv("AIRFLOW_VAR_DSR_OPS_EMAIL", OPS)
    monkeypatch.setenv("AIRFLOW_VAR_DSR_AT_RISK_DAYS", "7")
    yield server
    server.stop()


def _received_with_days_left(now: datetime, low: int, high: int) -> datetime:
    """A past ``received_at`` whose GDPR deadline leaves between ``low`` and ``high`` days (calendars vary)."""
    for days_ago in range(1, 120):
        received = now - timedelta(days=days_ago)
        left = (
            sla.due_at(received).astimezone(sla.CONTROLLER_TZ).date() - now.astimezone(sla.CONTROLLER_TZ).date()
        ).days
        if low <= left <= high:
            return received
    raise AssertionError(f"no received_at leaves {low}..{high} days")


@pytest.fixture
def known_requests(airflow_db, demo_world):
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:6].upper()
    received = {
        f"SLA-{tag}-ONTRACK": now - timedelta(days=1),
        f"SLA-{tag}-ATRISK": _received_with_days_left(now, 1, 5),
        f"SLA-{tag}-BREACHED": now - timedelta(days=50),
    }
    lg = ledger()
    lg.create_schema()
    for request_id, at in received.items():
        fingerprint = subject_fingerprint({"email": f"{request_id.lower()}@example.com"}, "e2e-secret")
        lg.record_request(request_id, "access", "GDPR", fingerprint, at, sla.due_at(at))
    lg.upsert_system_result(f"SLA-{tag}-ATRISK", "payflow", "export", "waiting", outcome="partner reference PF-9")
    return {name.rsplit("-", 1)[1].lower(): name for name in received}


def _mails_about(sink: SmtpSink, request_ids) -> list:
    return [m for m in sink.messages() if any(rid in m["Subject"] for rid in request_ids)]


def test_monitor_alerts_once_per_request_and_publishes_figures(known_requests, sink, demo_world):
    ids = known_requests
    dag = load_dag(constants.DAG_SLA_MONITOR)
    for _ in range(2):
        assert dag.test().state == "success"

    mails = _mails_about(sink, ids.values())
    subjects = sorted(m["Subject"].split(" due ")[0] for m in mails)
    assert subjects == sorted([f"[DSR at risk] {ids['atrisk']}", f"[DSR breached] {ids['breached']}"])
    assert all(m["To"] == OPS for m in mails)
    at_risk_mail = next(m for m in mails if ids["atrisk"] in m["Subject"])
    assert "payflow" in at_risk_mail.get_body(("html",)).get_content()

    lg = ledger()
    for key, kind in (("atrisk", "at_risk"), ("breached", "breached")):
        alerts = [e for e in lg.events(ids[key]) if e.event_type == "ops.alert_sent"]
        assert [e.payload["kind"] for e in alerts] == [kind]
    assert not [e for e in lg.events(ids["ontrack"]) if e.event_type == "ops.alert_sent"]

    body = demo_world.s3.get_object(Bucket=constants.EXPORTS_BUCKET, Key="_dashboard/sla.json")["Body"].read()
    figures = json.loads(body)
    status = {item["request_id"]: item for item in figures["open"]}
    assert status[ids["ontrack"]]["status"] == sla_status.ON_TRACK
    assert status[ids["atrisk"]]["status"] == sla_status.AT_RISK
    assert status[ids["atrisk"]]["partners_owed"] == ["payflow"]
    assert status[ids["breached"]]["status"] == sla_status.BREACHED
    assert status[ids["breached"]]["days_left"] < 0
    assert figures["counts"]["breached"] >= 1
    assert figures["at_risk_days"] == 7
    assert "@" not in body.decode()  # ids and counts only


def test_right_dag_run_gets_a_deadline_at_the_request_due_date(airflow_db, demo_world):
    """The scheduler's own code evaluates the custom reference when a run is created."""
    from airflow.models.dag_version import DagVersion
    from airflow.models.deadline import Deadline
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    dag = load_dag(constants.DAG_ACCESS)
    if not DagVersion.get_version(dag.dag_id):
        load_dag(constants.DAG_SLA_MONITOR).test()  # syncs every DAG of the folder to the metadata DB
    received = "2026-03-05T09:00:00Z"
    run_id = f"deadline_probe__{uuid.uuid4().hex[:8]}"
    with create_session() as session:
        scheduler_dag = SerializedDagModel.get_dag(dag.dag_id, session=session)
        run = scheduler_dag.create_dagrun(
            run_id=run_id,
            logical_date=None,
            data_interval=None,
            run_after=datetime.now(UTC),
            conf={"request_id": "DEADLINE-PROBE", "received_at": received},
            run_type=DagRunType.MANUAL,
            triggered_by=DagRunTriggeredByType.TEST,
            state=DagRunState.QUEUED,
            session=session,
        )
        session.flush()  # the scheduler commits the run and its deadlines together
        deadlines = session.scalars(select(Deadline).where(Deadline.dagrun_id == run.id)).all()
        assert [d.deadline_time for d in deadlines] == [sla.due_at(datetime(2026, 3, 5, 9, tzinfo=UTC))]
        for deadline in deadlines:
            session.delete(deadline)
        session.delete(run)
