"""A request's status follows all its systems: one partner answering does not hide another still waiting."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from include.dsr.ledger.api import Ledger, subject_fingerprint
from include.dsr.rights.partner_exchange import resume

RECEIVED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DUE = datetime(2026, 12, 2, 23, 59, tzinfo=UTC)


@pytest.fixture
def ledger(ledger_on_backends: Ledger) -> Ledger:
    return ledger_on_backends


def _open(ledger: Ledger, request_id: str) -> None:
    fingerprint = subject_fingerprint({"email": f"{request_id}@example.com"}, "secret")
    ledger.record_request(request_id, "access", "GDPR", fingerprint, RECEIVED, DUE)
    ledger.set_status(request_id, "waiting_on_partner")


@pytest.mark.parametrize(
    ("other_systems", "expected"),
    [
        pytest.param({}, "in_progress", id="the only partner answered"),
        pytest.param({"cardworks": "completed"}, "in_progress", id="the other partner answered earlier"),
        pytest.param({"cardworks": "waiting"}, "waiting_on_partner", id="another partner still owes its answer"),
        pytest.param(
            {"cardworks": "completed", "lasercut-bv": "waiting"}, "waiting_on_partner", id="one of several waiting"
        ),
        pytest.param({"cardworks": "failed"}, "in_progress", id="a failed partner is not waiting"),
    ],
)
def test_a_request_resumes_only_when_no_system_keeps_it_waiting(ledger, other_systems, expected):
    _open(ledger, "req-1")
    ledger.upsert_system_result("req-1", "payflow", "export", "completed", record_count=3)
    for system, status in other_systems.items():
        ledger.upsert_system_result("req-1", system, "export", status)
    assert resume(SimpleNamespace(ledger=ledger), ["req-1"]) == (expected == "in_progress")
    assert ledger.get_request("req-1").status == expected


@pytest.mark.parametrize("status", ["completed", "failed", "verifying", "in_progress"])
def test_a_request_not_waiting_on_partners_is_left_as_it_is(ledger, status):
    _open(ledger, "req-2")
    if status == "completed":
        ledger.close_request("req-2", "completed", DUE, "answered")
    else:
        ledger.set_status("req-2", status)
    ledger.upsert_system_result("req-2", "payflow", "export", "completed", record_count=1)
    assert resume(SimpleNamespace(ledger=ledger), ["req-2"]) == 0
    assert ledger.get_request("req-2").status == status


def test_a_wave_resumes_its_requests_one_by_one(ledger):
    for rid in ("w-1", "w-2", "w-3"):
        _open(ledger, rid)
        ledger.upsert_system_result(rid, "payflow", "export", "completed", record_count=1)
    ledger.upsert_system_result("w-2", "cardworks", "export", "waiting")
    assert resume(SimpleNamespace(ledger=ledger), ["w-1", "w-2", "w-3"]) == 2
    assert {rid: ledger.get_request(rid).status for rid in ("w-1", "w-2", "w-3")} == {
        "w-1": "in_progress",
        "w-2": "waiting_on_partner",
        "w-3": "in_progress",
    }
