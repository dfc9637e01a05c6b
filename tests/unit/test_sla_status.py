"""Status of an open request against its deadline, days left, and partners still owing a reply."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from include.dsr.ledger.api import Ledger
from include.dsr.sla import deadlines as sla
from include.dsr.sla import status as sla_status
from tests.unit.sla_helpers import record

RECEIVED = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)  # due 7 Apr 2026 (Easter Monday 6 Apr), 23:59:59 CEST
DUE = sla.due_at(RECEIVED)


def _row(ledger: Ledger, **changes):
    return replace(record(ledger, "REQ-1", RECEIVED), **changes)


@pytest.mark.parametrize(
    ("now", "expected_status", "expected_days"),
    [
        pytest.param(datetime(2026, 3, 10, 12, tzinfo=UTC), "on_track", 28, id="28 days left: on track"),
        pytest.param(datetime(2026, 3, 31, 12, tzinfo=UTC), "on_track", 7, id="exactly 7 days left: on track"),
        pytest.param(datetime(2026, 4, 1, 12, tzinfo=UTC), "at_risk", 6, id="6 days left: at risk"),
        pytest.param(datetime(2026, 4, 7, 21, 59, tzinfo=UTC), "at_risk", 0, id="due day 23:59 CEST: at risk"),
        pytest.param(
            datetime(2026, 4, 7, 22, 0, 1, tzinfo=UTC), "breached", -1, id="one second after 23:59:59 local: breached"
        ),
        pytest.param(datetime(2026, 5, 1, tzinfo=UTC), "breached", -24, id="weeks later: breached"),
    ],
)
def test_open_request_status(ledger, now, expected_status, expected_days):
    row = _row(ledger)
    assert sla_status.request_status(row, now) == expected_status
    assert sla_status.days_left(row, now) == expected_days


def test_closed_request_is_closed_and_days_left_is_its_margin(ledger):
    row = _row(ledger, closed_at=datetime(2026, 4, 2, 10, tzinfo=UTC), status="completed")
    assert sla_status.request_status(row, datetime(2026, 9, 1, tzinfo=UTC)) == "closed"
    assert sla_status.days_left(row, datetime(2026, 9, 1, tzinfo=UTC)) == 5


@pytest.mark.parametrize(
    ("at_risk_days", "expected"),
    [
        pytest.param(3, "on_track", id="N=3: 5 days left is fine"),
        pytest.param(5, "on_track", id="N=5: 5 days left is not fewer than 5"),
        pytest.param(6, "at_risk", id="N=6: 5 days left is at risk"),
    ],
)
def test_at_risk_threshold_is_a_parameter(ledger, at_risk_days, expected):
    now = datetime(2026, 4, 2, 8, tzinfo=UTC)
    assert sla_status.request_status(_row(ledger), now, at_risk_days) == expected


def test_extended_deadline_is_used(ledger):
    extended = sla.due_at(RECEIVED, extended=True)
    row = _row(ledger, extended_due_at=extended)
    now = DUE + timedelta(days=1)
    assert sla_status.request_status(row, now) == "on_track"
    assert sla_status.days_left(row, now) > 50


def test_explicit_deadline_wins(ledger):
    now = DUE + timedelta(hours=1)
    assert sla_status.request_status(_row(ledger), now, deadline=DUE + timedelta(days=30)) == "on_track"


def test_naive_now_is_refused(ledger):
    with pytest.raises(ValueError, match="timezone"):
        sla_status.request_status(_row(ledger), datetime(2026, 4, 1))


def test_owed_partners_are_partner_rows_still_pending_or_waiting(ledger):
    record(ledger, "REQ-1", RECEIVED)
    ledger.upsert_system_result("REQ-1", "payflow", "export", "waiting")
    ledger.upsert_system_result("REQ-1", "lasercut-bv", "export", "pending")
    ledger.upsert_system_result("REQ-1", "cardworks", "export", "completed", record_count=2)
    ledger.upsert_system_result("REQ-1", "anodize-lab-srl", "export", "failed", outcome="timeout")
    ledger.upsert_system_result("REQ-1", "fabconnect_app.account", "export", "pending")  # internal, not a partner
    assert sla_status.owed_partners(ledger, "REQ-1") == ["lasercut-bv", "payflow"]
    assert sla_status.owed_partners(ledger, "REQ-1", partner_systems={"payflow"}) == ["payflow"]


def test_current_deadline_includes_counted_pauses(ledger, clock):
    from include.dsr.sla import rules as sla_rules

    row = record(ledger, "REQ-1", RECEIVED)
    sla_rules.pause_clock(ledger, "REQ-1", "asked for the order number", RECEIVED + timedelta(days=1))
    sla_rules.resume_clock(ledger, "REQ-1", "order number received", RECEIVED + timedelta(days=4))
    deadline = sla_status.current_deadline(ledger, row, clock.now)
    assert deadline.astimezone(sla.CONTROLLER_TZ).date().isoformat() == "2026-04-10"
