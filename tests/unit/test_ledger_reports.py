"""Compliance figures of the dashboard against a ledger of known requests.

Every test runs on SQLite and, when ``DSR_TEST_POSTGRES_URL`` is set, on PostgreSQL
(see ``tests/conftest.py``). "Now" is Monday 15 June 2026, 12:00 UTC; deadlines follow
the German calendar of :mod:`include.dsr.sla.deadlines` (1 May and Easter Monday are holidays).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from include.dsr.core.errors import TerminalError
from include.dsr.ledger.api import Ledger, subject_fingerprint
from include.dsr.ledger.schema import dsr_requests
from include.dsr.sla import deadlines as sla
from include.dsr.sla import rules as sla_rules
from include.dsr.sla.reports import (
    ComplianceReport,
    OpenRequest,
    compliance_report,
    read_only_engine,
)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
PARTNERS = frozenset({"partner_a", "partner_b"})


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _record(ledger: Ledger, request_id: str, right: str, received: str) -> None:
    received_at = utc(received)
    fingerprint = subject_fingerprint({"email": f"{request_id.lower()}@example.com"}, "test-secret")
    ledger.record_request(request_id, right, "GDPR", fingerprint, received_at, sla.due_at(received_at))


def _close(ledger: Ledger, request_id: str, status: str, closed: str) -> None:
    ledger.close_request(request_id, status, utc(closed), f"closed as {status}")


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    ledger = Ledger(ledger_url)
    ledger.create_schema()
    # Open requests.
    _record(ledger, "R-OPEN-OK", "access", "2026-06-10T09:00")  # due Fri 10 Jul
    ledger.upsert_system_result("R-OPEN-OK", "partner_a", "export", "waiting")
    ledger.upsert_system_result("R-OPEN-OK", "partner_b", "export", "completed", record_count=3)
    ledger.upsert_system_result("R-OPEN-OK", "fabconnect_app", "export", "pending")  # internal
    _record(ledger, "R-AT-RISK", "erasure", "2026-05-18T09:00")  # due Thu 18 Jun
    ledger.upsert_system_result("R-AT-RISK", "partner_b", "notify", "pending")
    _record(ledger, "R-BREACHED", "portability", "2026-05-04T09:00")  # due Thu 4 Jun
    ledger.set_status("R-BREACHED", "waiting_on_partner")
    ledger.upsert_system_result("R-BREACHED", "partner_a", "export", "waiting")
    ledger.upsert_system_result("R-BREACHED", "partner_b", "export", "failed")
    _record(ledger, "R-EXTENDED", "access", "2026-04-01T09:00")  # due Mon 4 May (1 May holiday)
    ledger.extend("R-EXTENDED", sla.due_at(utc("2026-04-01T09:00"), extended=True), "partner volume")
    _record(ledger, "R-BOUNDARY", "restriction", "2026-05-31T22:30")  # 1 June, 00:30 Berlin
    # Closed requests: days from received to closed in the comments.
    _record(ledger, "C0", "access", "2025-06-20T09:00")  # before the 12-month volume window
    _close(ledger, "C0", "completed", "2025-07-01T09:00")  # 11 d, within 1m
    _record(ledger, "C1", "access", "2026-03-02T09:00")
    _close(ledger, "C1", "completed", "2026-03-12T09:00")  # 10 d, within 1m
    _record(ledger, "C2", "erasure", "2026-03-05T09:00")  # due 7 Apr, 3m 5 Jun
    _close(ledger, "C2", "completed", "2026-04-25T09:00")  # 51 d, within 3m only
    _record(ledger, "C3", "access", "2026-01-10T09:00")
    _close(ledger, "C3", "refused", "2026-01-30T09:00")  # 20 d, refusal is an answer
    _record(ledger, "C4", "access", "2026-02-02T09:00")
    ledger.upsert_system_result("C4", "partner_b", "export", "waiting")  # closed: not owed
    _close(ledger, "C4", "failed", "2026-02-20T09:00")  # not an answer
    _record(ledger, "C5", "portability", "2026-01-05T09:00")  # 3m due 7 Apr (Easter Monday)
    _close(ledger, "C5", "completed", "2026-05-01T09:00")  # 116 d, late for both windows
    yield ledger
    ledger.close()


@pytest.fixture
def report(ledger: Ledger) -> ComplianceReport:
    return compliance_report(ledger.engine, now=NOW, at_risk_days=7, partner_systems=PARTNERS)


def test_open_requests_most_urgent_first_with_deadline_in_force(report: ComplianceReport) -> None:
    assert [(r.request_id, r.right, r.days_left, r.status, r.extended) for r in report.open_requests] == [
        ("R-BREACHED", "portability", -11, "breached", False),
        ("R-AT-RISK", "erasure", 3, "at_risk", False),
        ("R-BOUNDARY", "restriction", 16, "on_track", False),
        ("R-EXTENDED", "access", 16, "on_track", True),
        ("R-OPEN-OK", "access", 25, "on_track", False),
    ]
    extended = next(r for r in report.open_requests if r.request_id == "R-EXTENDED")
    assert extended.due_at == utc("2026-07-01T21:59:59")  # received + 3 months, not 4 May
    assert extended.received_at == utc("2026-04-01T09:00")
    assert report.open_requests[0].ledger_status == "waiting_on_partner"


@pytest.mark.parametrize(
    ("resumed", "due", "days_left", "paused"),
    [
        pytest.param("2026-06-09T09:00", "2026-07-08T21:59:59", 23, False, id="closed pause of 7 days"),
        pytest.param(None, "2026-07-14T21:59:59", 29, True, id="open pause of 13 days so far"),
    ],
)
def test_counted_pause_moves_the_deadline_in_force(
    ledger: Ledger, resumed: str | None, due: str, days_left: int, paused: bool
) -> None:
    _record(ledger, "R-PAUSED", "access", "2026-06-01T09:00")  # due Wed 1 Jul
    sla_rules.pause_clock(ledger, "R-PAUSED", "ID document asked", utc("2026-06-02T09:00"))
    if resumed:
        sla_rules.resume_clock(ledger, "R-PAUSED", "ID document received", utc(resumed))
    report = compliance_report(ledger.engine, now=NOW, partner_systems=PARTNERS)
    row = next(r for r in report.open_requests if r.request_id == "R-PAUSED")
    assert (row.due_at, row.days_left, row.paused, row.status) == (utc(due), days_left, paused, "on_track")


def test_breached_and_at_risk_lists(report: ComplianceReport) -> None:
    assert report.breached == [report.open_requests[0]]
    assert report.breached[0] == OpenRequest(
        request_id="R-BREACHED",
        right="portability",
        jurisdiction="GDPR",
        ledger_status="waiting_on_partner",
        received_at=utc("2026-05-04T09:00"),
        due_at=utc("2026-06-04T21:59:59"),
        extended=False,
        paused=False,
        days_left=-11,
        status="breached",
        partners_owed=("partner_a",),
    )
    assert [r.request_id for r in report.at_risk] == ["R-AT-RISK"]


@pytest.mark.parametrize(
    ("request_id", "owed"),
    [
        pytest.param("R-OPEN-OK", ("partner_a",), id="completed partner and internal system not owed"),
        pytest.param("R-AT-RISK", ("partner_b",), id="pending notification is owed"),
        pytest.param("R-BREACHED", ("partner_a",), id="failed partner is not waited for"),
        pytest.param("R-EXTENDED", (), id="no partner rows"),
    ],
)
def test_partners_still_owed(report: ComplianceReport, request_id: str, owed: tuple[str, ...]) -> None:
    assert next(r for r in report.open_requests if r.request_id == request_id).partners_owed == owed


def test_volume_per_right_per_month_in_controller_time(report: ComplianceReport) -> None:
    months = [v.month for v in report.volume]
    assert months[0] == "2025-07"
    assert months[-1] == "2026-06"
    assert len(months) == 12
    nonzero = {v.month: {right: n for right, n in v.counts.items() if n} for v in report.volume if v.total}
    assert nonzero == {
        "2026-01": {"access": 1, "portability": 1},
        "2026-02": {"access": 1},
        "2026-03": {"access": 1, "erasure": 1},
        "2026-04": {"access": 1},
        "2026-05": {"erasure": 1, "portability": 1},
        "2026-06": {"access": 1, "restriction": 1},  # R-BOUNDARY: 31 May UTC, 1 June in Berlin
    }
    assert sum(v.total for v in report.volume) == 10  # C0 is older than the window


def test_share_answered_within_one_and_three_months(report: ComplianceReport) -> None:
    one, three = report.shares["1m"], report.shares["3m"]
    # 1m: answered C0, C1, C3 in time; C2, C5 late; C4 (failed), R-BREACHED and R-EXTENDED
    # are past their first deadline unanswered; R-AT-RISK, R-OPEN-OK, R-BOUNDARY not judged yet.
    assert (one.answered_in_time, one.eligible, one.ratio) == (3, 8, 3 / 8)
    # 3m: C0, C1, C2, C3 in time; C5 late; C4 past its 3-month window unanswered.
    assert (three.answered_in_time, three.eligible, three.ratio) == (4, 6, 4 / 6)


def test_answered_counts_and_median_time_to_close(report: ComplianceReport) -> None:
    assert report.answered == 5
    assert report.median_days_to_close == 20.0  # of 10, 11, 20, 51, 116 days
    assert report.closed_by_status == {"completed": 4, "refused": 1, "failed": 1}


def test_open_counts_cover_every_right_and_status(report: ComplianceReport) -> None:
    counts = report.open_counts()
    assert len(counts) == 6 * 3
    assert {key: n for key, n in counts.items() if n} == {
        ("access", "on_track"): 2,
        ("restriction", "on_track"): 1,
        ("erasure", "at_risk"): 1,
        ("portability", "breached"): 1,
    }


def test_at_risk_threshold_is_a_parameter(ledger: Ledger) -> None:
    wide = compliance_report(ledger.engine, now=NOW, at_risk_days=20, partner_systems=PARTNERS)
    assert [r.request_id for r in wide.at_risk] == ["R-AT-RISK", "R-BOUNDARY", "R-EXTENDED"]


def test_median_of_an_even_count_is_the_mean_of_the_middle_two(ledger: Ledger) -> None:
    _close(ledger, "R-OPEN-OK", "completed", "2026-06-12T09:00")  # 2 days
    report = compliance_report(ledger.engine, now=NOW, partner_systems=PARTNERS)
    assert report.answered == 6
    assert report.median_days_to_close == 15.5  # of 2, 10, 11, 20, 51, 116
    assert "R-OPEN-OK" not in {r.request_id for r in report.open_requests}


def test_empty_ledger_has_no_ratio_and_no_median(ledger_url: str) -> None:
    empty = Ledger(ledger_url)
    empty.create_schema()
    try:
        report = compliance_report(empty.engine, now=NOW, partner_systems=PARTNERS)
    finally:
        empty.close()
    assert report.open_requests == ()
    assert report.shares["1m"].ratio is None
    assert report.shares["3m"].ratio is None
    assert report.median_days_to_close is None
    assert report.answered == 0
    assert len(report.volume) == 12
    assert all(v.total == 0 for v in report.volume)


def test_now_must_be_timezone_aware(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compliance_report(ledger.engine, now=datetime(2026, 6, 15, 12), partner_systems=PARTNERS)


def test_read_only_engine_reads_the_same_figures_and_cannot_write(ledger: Ledger, ledger_url: str) -> None:
    engine = read_only_engine(ledger_url)
    try:
        report = compliance_report(engine, now=NOW, partner_systems=PARTNERS)
        assert [r.request_id for r in report.open_requests][:2] == ["R-BREACHED", "R-AT-RISK"]
        with pytest.raises(sa.exc.DBAPIError, match=r"(?i)read-?only"), engine.begin() as conn:
            conn.execute(dsr_requests.update().values(status="completed"))
    finally:
        engine.dispose()
    assert ledger.get_request("R-BREACHED").status == "waiting_on_partner"


def test_read_only_engine_does_not_create_a_missing_sqlite_ledger(tmp_path) -> None:
    missing = tmp_path / "no-ledger.sqlite"
    engine = read_only_engine(f"sqlite:///{missing}")
    try:
        with pytest.raises(sa.exc.OperationalError, match="unable to open"), engine.connect():
            pass
    finally:
        engine.dispose()
    assert not missing.exists()


@pytest.mark.parametrize(
    "url",
    [pytest.param("sqlite://", id="in-memory sqlite"), pytest.param("mysql://u@h/db", id="mysql")],
)
def test_read_only_engine_refuses_other_databases(url: str) -> None:
    with pytest.raises(TerminalError, match="sqlite"):
        read_only_engine(url)
