"""Each partner failure mode ends as documented.

| mode  | what the partner does                 | documented outcome                                        |
|-------|---------------------------------------|-----------------------------------------------------------|
| fail  | HTTP 500 twice, then answers          | retried with backoff inside the task, then succeeded      |
| stall | answers slower than our timeout       | retried (in task, then by Airflow), then failed; ledger   |
|       |                                       | says the partner did not answer                           |
| late  | answers after 48 simulated hours      | waits deferred (ledger: waiting), then succeeds           |
| never | accepts, never answers                | waits deferred (ledger: waiting) until the deadline, then |
|       |                                       | fails with "did not answer before <deadline>"            |
| lie   | returns another subject's rows        | Great Expectations check fails, naming the partner        |
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from include import settings
from include.demo.partners.faults import Faults
from tests.e2e.conftest import run_dag
from tests.e2e.helpers import (
    conf_for,
    expected_rows,
    gathered_rows,
    ledger,
    package_data,
)

pytestmark = pytest.mark.slow

API_PARTNER = "payflow"  # every hard-case customer paid through it


def _partner_row(request_id: str, system: str):
    return next(r for r in ledger().system_results(request_id) if r.system == system)


def _partner_events(request_id: str, system: str) -> list[str]:
    return [e.event_type for e in ledger().events(request_id) if (e.payload or {}).get("system") == system]


def test_partner_failing_twice_is_retried_then_succeeds(airflow_db, demo_world, healthy_partners):
    healthy_partners[API_PARTNER].faults = Faults(mode="fail", fail_count=2)
    request_id = "E2E-FAIL-H01"
    assert run_dag("dsr_access", conf_for("H01", request_id)).state == "success"
    rows, _ = gathered_rows(package_data(demo_world.s3, request_id))
    assert {r for r in rows if r[0] == API_PARTNER} == {
        r for r in expected_rows(demo_world.paths, "H01") if r[0] == API_PARTNER
    }
    assert _partner_row(request_id, API_PARTNER).status == "completed"


def test_stalling_partner_is_retried_then_fails_with_the_reason(airflow_db, demo_world, healthy_partners):
    healthy_partners[API_PARTNER].faults = Faults(mode="stall", stall_seconds=3)
    request_id = "E2E-STALL-H03"
    run = run_dag("dsr_access", conf_for("H03", request_id))
    assert run.state == "failed"
    gather = [t for t in run.get_task_instances() if t.task_id == "gather" and t.state == "failed"]
    assert len(gather) == 1
    assert gather[0].try_number == 1 + settings.TASK_RETRIES
    row = _partner_row(request_id, API_PARTNER)
    assert row.status == "failed"
    assert "did not answer" in row.outcome
    request = ledger().get_request(request_id)
    assert request.status == "failed"
    assert "did not answer" in request.outcome_summary


def test_late_partner_is_waited_for_without_a_worker_then_succeeds(
    airflow_db, demo_world, healthy_partners, monkeypatch
):
    sim = healthy_partners[API_PARTNER]
    sim.faults = Faults(mode="late", late_hours=48)
    monkeypatch.setattr(settings, "PARTNER_MAX_WAIT_SECONDS", 90.0)  # a broken test fails instead of hanging
    request_id = "E2E-LATE-H04"
    # Resolve the ledger connection and create its tables here, in the main thread: Airflow's
    # comms serve connections to it, and this may be the session's first run.
    ledger().create_schema()

    def advance_clock_once_waiting():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = [r for r in ledger().system_results(request_id) if r.system == API_PARTNER]
            if rows and rows[0].status == "waiting":
                sim.clock.advance(49)
                return
            time.sleep(0.2)

    helper = threading.Thread(target=advance_clock_once_waiting, daemon=True)
    helper.start()
    run = run_dag("dsr_access", conf_for("H04", request_id))
    helper.join()
    assert run.state == "success"
    assert _partner_events(request_id, API_PARTNER)[-2:] == ["system.waiting", "system.completed"]
    deferred = [t for t in run.get_task_instances() if t.task_id == "gather" and t.try_number == 1]
    assert all(t.state == "success" for t in deferred)  # resumed from the deferral, not retried


def test_silent_partner_waits_visibly_then_fails_at_the_deadline(airflow_db, demo_world, healthy_partners, monkeypatch):
    healthy_partners[API_PARTNER].faults = Faults(mode="never")
    monkeypatch.setattr(settings, "PARTNER_MAX_WAIT_SECONDS", 3.0)
    request_id = "E2E-NEVER-H07"
    run = run_dag("dsr_access", conf_for("H07", request_id))
    assert run.state == "failed"
    assert _partner_events(request_id, API_PARTNER)[-2:] == ["system.waiting", "system.failed"]
    row = _partner_row(request_id, API_PARTNER)
    assert "did not answer request E2E-NEVER-H07 before" in row.outcome


@pytest.mark.parametrize(
    "channel", [pytest.param("api", id="api partner"), pytest.param("s3_dropbox", id="s3 drop-box partner")]
)
def test_lying_partner_is_caught_by_the_checks(airflow_db, demo_world, healthy_partners, channel):
    person_key, partner = _subject_served_by(demo_world, channel)
    healthy_partners[partner].faults = Faults(mode="lie")
    request_id = f"E2E-LIE-{channel}"
    run = run_dag("dsr_access", conf_for(person_key, request_id))
    assert run.state == "failed"
    failed = {t.task_id for t in run.get_task_instances() if t.state == "failed"}
    assert failed == {"validate_results"}
    summary = ledger().get_request(request_id).outcome_summary
    assert partner in summary
    assert "do not belong to the subject" in summary
    report = demo_world.s3.get_object(
        Bucket="fabconnect-dsr-exports", Key=f"_staging/{request_id}/checks/{partner}.json"
    )
    assert b'"success": false' in report["Body"].read()


def _subject_served_by(demo_world, channel: str) -> tuple[str, str]:
    """A hard-case person whose data went to a partner of ``channel`` (any, deterministic)."""
    from include.dsr.core.data_map import load_data_map

    partners = [p.key for p in load_data_map().partners() if p.channel == channel and p.key != API_PARTNER]
    truth = sqlite3.connect(demo_world.paths.ground_truth)
    for person_key in ("H01", "H02", "H03", "H04", "H07", "H08"):
        held = {r[0] for r in truth.execute("SELECT DISTINCT system FROM owned_rows WHERE person_key=?", (person_key,))}
        for partner in partners:
            if partner in held:
                return person_key, partner
    pytest.fail(f"no hard case has data at a {channel} partner in this world")


def test_partner_answering_within_moments_is_collected_in_the_task(airflow_db, demo_world, monkeypatch):
    """Drop-box partners answer within a poll or two: the task waits in place instead of deferring."""
    person_key, partner = _subject_served_by(demo_world, "s3_dropbox")
    monkeypatch.setattr(settings, "PARTNER_INLINE_WAIT_SECONDS", 5.0)
    request_id = "E2E-INLINE-DROPBOX"
    run = run_dag("dsr_access", conf_for(person_key, request_id))
    assert run.state == "success"
    assert _partner_row(request_id, partner).status == "completed"
    gathers = [t for t in run.get_task_instances() if t.task_id == "gather"]
    assert all(t.try_number == 1 for t in gathers)
