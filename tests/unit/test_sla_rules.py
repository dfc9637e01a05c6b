"""Extension and identity-verification pause rules (GDPR Art. 12(3), EDPB 01/2022)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from include.dsr.ledger.api import Ledger
from include.dsr.ledger.schema import UnknownRequestError
from include.dsr.sla import deadlines as sla
from include.dsr.sla import rules as sla_rules
from include.dsr.sla.rules import ExtensionRefusedError, PauseRefusedError
from tests.unit.sla_helpers import record

RECEIVED = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)  # first deadline 7 Apr 2026 (after Easter)
FIRST_DUE = sla.due_at(RECEIVED)
EXTENDED_DUE = sla.due_at(RECEIVED, extended=True)  # 5 Jun 2026


def _local(moment: datetime) -> date:
    return moment.astimezone(sla.CONTROLLER_TZ).date()


def _notice_recorder(ledger: Ledger):
    """A ``send_notice`` that records the notice event the way :class:`Notices` does."""
    sent = []

    def send(row, new_due):
        sent.append(new_due)
        return ledger.append_event(
            row.request_id,
            "notice.sent",
            {"kind": "extension", "new_due_at": new_due},
            dedupe_key=f"{row.request_id}:notice.sent:extension",
        )

    return send, sent


# -- extension ------------------------------------------------------------------------


def test_extension_before_the_first_deadline_sends_the_notice_then_records(ledger, clock):
    record(ledger, "REQ-1", RECEIVED)
    clock.now = FIRST_DUE - timedelta(days=3)
    send, sent = _notice_recorder(ledger)
    row = sla_rules.extend_request(ledger, "REQ-1", "complex request: 9 partners involved", clock.now, send)
    assert row.extended_due_at == EXTENDED_DUE
    assert _local(EXTENDED_DUE) == date(2026, 6, 5)
    assert row.extension_reason == "complex request: 9 partners involved"
    assert sent == [EXTENDED_DUE]
    types = [e.event_type for e in ledger.events("REQ-1")]
    assert types.index("notice.sent") < types.index("request.extended")
    assert sla_rules.extension_is_valid(row, ledger.events("REQ-1"), clock.now)


def test_extension_rerun_with_the_same_reason_changes_nothing(ledger, clock):
    record(ledger, "REQ-1", RECEIVED)
    send, sent = _notice_recorder(ledger)
    clock.now = RECEIVED + timedelta(days=10)
    sla_rules.extend_request(ledger, "REQ-1", "many requests", clock.now, send)
    before = len(ledger.events("REQ-1"))
    sla_rules.extend_request(ledger, "REQ-1", "many requests", clock.now, send)
    assert len(sent) == 1
    assert len(ledger.events("REQ-1")) == before


@pytest.mark.parametrize(
    ("reason", "now_offset", "message"),
    [
        pytest.param(
            "complex", timedelta(seconds=1), "first deadline .* has passed", id="one second after the deadline"
        ),
        pytest.param("complex", timedelta(days=40), "first deadline .* has passed", id="weeks after the deadline"),
        pytest.param("", -timedelta(days=5), "needs a reason", id="empty reason"),
        pytest.param("   ", -timedelta(days=5), "needs a reason", id="blank reason"),
    ],
)
def test_extension_refused(ledger, clock, reason, now_offset, message):
    record(ledger, "REQ-1", RECEIVED)
    send, sent = _notice_recorder(ledger)
    clock.now = FIRST_DUE + now_offset
    with pytest.raises(ExtensionRefusedError, match=message):
        sla_rules.extend_request(ledger, "REQ-1", reason, clock.now, send)
    assert sent == []
    assert ledger.get_request("REQ-1").extended_due_at is None


def test_extension_at_the_last_second_of_the_first_deadline_is_allowed(ledger, clock):
    record(ledger, "REQ-1", RECEIVED)
    send, _ = _notice_recorder(ledger)
    clock.now = FIRST_DUE
    assert sla_rules.extend_request(ledger, "REQ-1", "complex", clock.now, send).extended_due_at == EXTENDED_DUE


def test_second_extension_and_closed_request_are_refused(ledger, clock):
    record(ledger, "REQ-1", RECEIVED)
    send, _ = _notice_recorder(ledger)
    clock.now = RECEIVED + timedelta(days=3)
    sla_rules.extend_request(ledger, "REQ-1", "complex", clock.now, send)
    with pytest.raises(ExtensionRefusedError, match="already extended"):
        sla_rules.extend_request(ledger, "REQ-1", "another reason", clock.now, send)
    record(ledger, "REQ-2", RECEIVED)
    ledger.close_request("REQ-2", "completed", clock.now, "answered")
    with pytest.raises(ExtensionRefusedError, match="closed"):
        sla_rules.extend_request(ledger, "REQ-2", "complex", clock.now, send)
    with pytest.raises(UnknownRequestError):
        sla_rules.extend_request(ledger, "REQ-404", "complex", clock.now, send)


def test_ccpa_extension_adds_45_days(ledger, clock):
    row = record(ledger, "REQ-C", RECEIVED, jurisdiction="CCPA")
    clock.now = RECEIVED + timedelta(days=30)
    send, _ = _notice_recorder(ledger)
    extended = sla_rules.extend_request(ledger, "REQ-C", "many requests", clock.now, send)
    assert _local(row.due_at) == date(2026, 4, 19)
    assert _local(extended.extended_due_at) == date(2026, 6, 3)


def test_extension_without_a_timely_notice_is_not_valid(ledger, clock):
    record(ledger, "REQ-1", RECEIVED)
    row = ledger.extend("REQ-1", EXTENDED_DUE, "recorded by hand, no notice")
    assert not sla_rules.extension_is_valid(row, ledger.events("REQ-1"), clock.now)
    clock.now = FIRST_DUE + timedelta(days=1)
    ledger.append_event("REQ-1", "notice.sent", {"kind": "extension"})
    assert not sla_rules.extension_is_valid(row, ledger.events("REQ-1"), clock.now)


# -- pauses ---------------------------------------------------------------------------


def test_prompt_pause_moves_the_deadline_by_the_paused_days(ledger, clock):
    row = record(ledger, "REQ-1", RECEIVED)
    paused = sla_rules.pause_clock(ledger, "REQ-1", "asked for the order number", RECEIVED + timedelta(days=1))
    assert paused.payload["counts"] is True
    assert paused.payload["reason"] == "asked for the order number"
    resumed = sla_rules.resume_clock(ledger, "REQ-1", "order number received", RECEIVED + timedelta(days=6))
    assert resumed.payload["paused_days"] == 5
    deadline = sla_rules.effective_deadline(row, ledger.events("REQ-1"), clock.now)
    assert _local(deadline) == date(2026, 4, 13)  # 7 Apr + 5 days = 12 Apr, a Sunday -> Monday 13 Apr


def test_late_pause_is_recorded_but_does_not_move_the_deadline(ledger, clock):
    row = record(ledger, "REQ-1", RECEIVED)  # Thursday 5 Mar: 5 working days -> Thursday 12 Mar
    late = RECEIVED + timedelta(days=8)
    assert late > sla_rules.pause_prompt_limit(RECEIVED)
    event = sla_rules.pause_clock(ledger, "REQ-1", "asked for an ID copy", late)
    assert event.payload["counts"] is False
    sla_rules.resume_clock(ledger, "REQ-1", "ID checked", late + timedelta(days=10))
    assert sla_rules.effective_deadline(row, ledger.events("REQ-1"), clock.now) == FIRST_DUE


def test_open_pause_stops_the_clock(ledger):
    row = record(ledger, "REQ-1", RECEIVED)
    sla_rules.pause_clock(ledger, "REQ-1", "asked for the account id", RECEIVED + timedelta(days=2))
    much_later = FIRST_DUE + timedelta(days=20)
    deadline = sla_rules.effective_deadline(row, ledger.events("REQ-1"), much_later)
    assert deadline > much_later


def test_pause_rules(ledger, clock):
    record(ledger, "REQ-1", RECEIVED)
    with pytest.raises(PauseRefusedError, match="not paused"):
        sla_rules.resume_clock(ledger, "REQ-1", "nothing", RECEIVED + timedelta(days=1))
    with pytest.raises(PauseRefusedError, match="needs a reason"):
        sla_rules.pause_clock(ledger, "REQ-1", " ", RECEIVED + timedelta(days=1))
    with pytest.raises(PauseRefusedError, match="before the request was received"):
        sla_rules.pause_clock(ledger, "REQ-1", "asked", RECEIVED - timedelta(days=1))
    first = sla_rules.pause_clock(ledger, "REQ-1", "asked for the order number", RECEIVED + timedelta(days=1))
    again = sla_rules.pause_clock(ledger, "REQ-1", "asked for the order number", RECEIVED + timedelta(days=1))
    assert again.seq == first.seq  # re-run
    with pytest.raises(PauseRefusedError, match="already paused"):
        sla_rules.pause_clock(ledger, "REQ-1", "another question", RECEIVED + timedelta(days=2))
    with pytest.raises(PauseRefusedError, match="before the pause started"):
        sla_rules.resume_clock(ledger, "REQ-1", "answered", RECEIVED)
    record(ledger, "REQ-2", RECEIVED)
    with pytest.raises(PauseRefusedError, match="deadline has passed"):
        sla_rules.pause_clock(ledger, "REQ-2", "asked", FIRST_DUE + timedelta(hours=1))


def test_extension_deadline_check_counts_pauses(ledger, clock):
    record(ledger, "REQ-1", RECEIVED)
    sla_rules.pause_clock(ledger, "REQ-1", "asked for the order number", RECEIVED + timedelta(days=1))
    sla_rules.resume_clock(ledger, "REQ-1", "received", RECEIVED + timedelta(days=4))
    clock.now = FIRST_DUE + timedelta(days=1)  # past the nominal date, within the paused-days shift
    send, _ = _notice_recorder(ledger)
    assert sla_rules.extend_request(ledger, "REQ-1", "complex", clock.now, send).extended_due_at == EXTENDED_DUE
