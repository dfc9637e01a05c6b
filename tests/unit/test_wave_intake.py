"""A wave's lines recorded and verified at once: new, resumed, closed before, and an id that
belongs to another subject, each with the outcome a single run gives it (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from include import settings
from include.dsr.core.fingerprint import subject_fingerprint
from include.dsr.core.request import parse_request
from include.dsr.ledger.api import Ledger, RequestConflictError
from include.dsr.rights import intake
from include.dsr.rights.runtime import Runtime

VERIFIED = {"method": "logged_in_session", "verified_at": "2026-11-20T10:00:00Z"}
RECEIVED = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _request(rid: str, email: str):
    return parse_request(
        {"request_id": rid, "subject": {"email": email}, "verification": VERIFIED, "received_at": RECEIVED.isoformat()},
        "access",
    )


@pytest.fixture
def rt(ledger_on_backends: Ledger) -> Runtime:
    return Runtime(data_map=None, ledger=ledger_on_backends, app_engine=None, s3=None)  # only the ledger is used


def test_each_line_gets_what_a_single_run_would_give_it(rt):
    secret = settings.DEMO_FINGERPRINT_SECRET
    fingerprint = subject_fingerprint({"email": "closed@example.com"}, secret)
    rt.ledger.record_request("W-CLOSED", "access", "GDPR", fingerprint, RECEIVED, RECEIVED)
    rt.ledger.close_request("W-CLOSED", "completed", RECEIVED, "answered")
    rt.ledger.record_request(
        "W-OPEN", "access", "GDPR", subject_fingerprint({"email": "open@example.com"}, secret), RECEIVED, RECEIVED
    )  # an earlier run recorded it and failed later
    other = subject_fingerprint({"email": "someone.else@example.com"}, secret)
    rt.ledger.record_request("W-TAKEN", "access", "GDPR", other, RECEIVED, RECEIVED)
    lines = {
        "W-NEW": _request("W-NEW", "new@example.com"),
        "W-OPEN": _request("W-OPEN", "open@example.com"),
        "W-CLOSED": _request("W-CLOSED", "closed@example.com"),
        "W-TAKEN": _request("W-TAKEN", "me@example.com"),
    }
    started = intake.start_verified_requests(rt, lines, "access", "manual__wave")
    assert started["W-NEW"] is True
    assert started["W-OPEN"] is True
    assert started["W-CLOSED"] is False
    assert isinstance(started["W-TAKEN"], RequestConflictError)
    assert "me@example.com" not in str(started["W-TAKEN"])
    for rid in ("W-NEW", "W-OPEN"):
        row = rt.ledger.get_request(rid)
        assert row.status == "in_progress"
        events = [e.event_type for e in rt.ledger.events(rid)]
        assert events.count("identity.verified") == 1
    assert rt.ledger.get_request("W-NEW").due_at > RECEIVED  # its deadline computed as a single run's
    assert [e.event_type for e in rt.ledger.events("W-TAKEN")] == ["request.received"]  # untouched
    assert rt.ledger.get_request("W-CLOSED").status == "completed"
    again = intake.start_verified_requests(rt, lines, "access", "manual__wave")  # a re-run of the wave
    assert again == {**started, "W-TAKEN": again["W-TAKEN"]}
    assert [e.event_type for e in rt.ledger.events("W-NEW")].count("identity.verified") == 1
    rt.ledger.verify_chain_or_raise()
