"""Due dates follow GDPR Art. 12(3) with Regulation 1182/71 month rules and holiday roll-over."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from include.dsr.sla import deadlines as sla

BERLIN = ZoneInfo("Europe/Berlin")


def _received(day: str, hour: int = 10) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=BERLIN)


def _due_day(received: datetime, **kwargs) -> date:
    return sla.due_at(received, **kwargs).astimezone(BERLIN).date()


@pytest.mark.parametrize(
    ("received", "due"),
    [
        pytest.param("2026-03-05", "2026-04-07", id="5 Mar -> 5 Apr is Easter Sunday, 6 Apr Easter Monday -> 7 Apr"),
        pytest.param("2027-03-05", "2027-04-05", id="5 Mar -> 5 Apr on a Monday"),
        pytest.param("2026-08-31", "2026-09-30", id="31 Aug -> 30 Sep (no 31 Sep)"),
        pytest.param("2026-01-31", "2026-03-02", id="31 Jan -> 28 Feb 2026 is a Saturday -> Monday 2 Mar"),
        pytest.param("2027-01-31", "2027-03-01", id="31 Jan 2027 -> 28 Feb is a Sunday -> Monday 1 Mar"),
        pytest.param("2028-01-31", "2028-02-29", id="31 Jan in a leap year -> 29 Feb (Tuesday)"),
        pytest.param("2028-02-29", "2028-03-29", id="29 Feb -> 29 Mar"),
        pytest.param("2026-11-25", "2026-12-28", id="25 Nov -> 25 Dec Christmas, 26 Dec, 27 Dec Sunday -> 28 Dec"),
        pytest.param("2026-04-30", "2026-06-01", id="30 Apr -> 30 May Saturday -> Mon 1 Jun"),
        pytest.param("2026-09-03", "2026-10-05", id="3 Sep -> 3 Oct German Unity Day (Sat) -> 5 Oct"),
        pytest.param("2027-08-31", "2027-09-30", id="31 Aug 2027 -> 30 Sep (Thursday)"),
        pytest.param("2025-12-31", "2026-02-02", id="31 Dec -> 31 Jan 2026 is a Saturday -> Monday 2 Feb"),
        pytest.param("2028-03-31", "2028-05-02", id="31 Mar -> 30 Apr 2028 Sunday, 1 May Labour Day -> 2 May"),
        pytest.param("2027-04-30", "2027-05-31", id="30 Apr -> 30 May 2027 Sunday -> Monday 31 May"),
        pytest.param("2029-01-31", "2029-02-28", id="31 Jan in a common year -> 28 Feb (Wednesday)"),
        pytest.param("2032-02-29", "2032-03-30", id="29 Feb 2032 -> 29 Mar is Easter Monday -> 30 Mar"),
        pytest.param("2026-11-30", "2026-12-30", id="30 Nov -> 30 Dec (Wednesday)"),
    ],
)
def test_gdpr_due_date(received, due):
    assert _due_day(_received(received)) == date.fromisoformat(due)


def test_extension_is_three_months_by_the_same_rules():
    assert _due_day(_received("2026-08-31"), extended=True) == date(2026, 11, 30)
    assert _due_day(_received("2026-09-25"), extended=True) == date(2026, 12, 28)  # 25 Dec -> after holidays


@pytest.mark.parametrize(
    ("received", "extended_due"),
    [
        pytest.param("2028-01-31", "2028-05-02", id="31 Jan -> 30 Apr 2028 Sunday, 1 May holiday -> 2 May"),
        pytest.param("2027-11-29", "2028-02-29", id="29 Nov -> 29 Feb in a leap year"),
        pytest.param("2026-11-30", "2027-03-01", id="30 Nov -> no 30 Feb -> 28 Feb 2027 Sunday -> 1 Mar"),
        pytest.param("2026-12-31", "2027-03-31", id="31 Dec -> 31 Mar (Wednesday)"),
    ],
)
def test_extended_month_ends(received, extended_due):
    assert _due_day(_received(received), extended=True) == date.fromisoformat(extended_due)


@pytest.mark.parametrize(
    ("day", "utc_hour"),
    [
        pytest.param(date(2026, 3, 28), 22, id="day before DST starts: CET, 22:59:59 UTC"),
        pytest.param(date(2026, 3, 29), 21, id="DST starts that night: CEST, 21:59:59 UTC"),
        pytest.param(date(2026, 10, 25), 22, id="DST ends that night: CET, 22:59:59 UTC"),
        pytest.param(date(2026, 10, 24), 21, id="last CEST day: 21:59:59 UTC"),
    ],
)
def test_end_of_day_follows_dst(day, utc_hour):
    moment = sla.end_of_day(day)
    assert (moment.hour, moment.minute, moment.second, moment.tzinfo) == (utc_hour, 59, 59, UTC)


def test_due_date_across_the_dst_change_ends_at_local_midnight():
    # DST starts on 28 Mar 2027: a deadline before it ends at 23:59:59 CET, one after it at 23:59:59 CEST.
    assert sla.due_at(_received("2027-02-24")) == datetime(2027, 3, 24, 22, 59, 59, tzinfo=UTC)
    assert sla.due_at(_received("2027-03-01")) == datetime(2027, 4, 1, 21, 59, 59, tzinfo=UTC)
    # Received 26 Feb 2027: 26 Mar is Good Friday, 29 Mar Easter Monday -> Tuesday 30 Mar, in CEST.
    assert sla.due_at(_received("2027-02-26")) == datetime(2027, 3, 30, 21, 59, 59, tzinfo=UTC)


def test_days_are_counted_in_controller_time_across_dst():
    # 00:30 on 29 March 2026 in Berlin (the night of the DST switch) is 23:30 UTC on the 28th.
    received = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)
    assert received.astimezone(BERLIN).date() == date(2026, 3, 29)
    assert _due_day(received) == date(2026, 4, 29)
    # 22:30 UTC on 25 Oct 2026 (after DST ended that morning) is 23:30 in Berlin: still the 25th.
    assert _due_day(datetime(2026, 10, 25, 22, 30, tzinfo=UTC)) == date(2026, 11, 25)


def test_due_at_is_end_of_the_local_day():
    due = sla.due_at(_received("2027-03-05"))
    local = due.astimezone(BERLIN)
    assert (local.hour, local.minute) == (23, 59)
    assert due.tzinfo is not None


def test_naive_received_at_is_refused():
    with pytest.raises(ValueError, match="timezone"):
        sla.due_at(datetime(2026, 1, 1))


def test_other_countries_use_their_own_holidays():
    # 17 Mar (St Patrick's Day) is a holiday in Ireland, not in Germany.
    assert _due_day(_received("2026-02-17"), country="IE") == date(2026, 3, 18)
    assert _due_day(_received("2026-02-17"), country="DE") == date(2026, 3, 17)


def test_ccpa_timers():
    received = _received("2026-01-05")
    assert _due_day(received, jurisdiction="CCPA") == date(2026, 2, 19)
    assert _due_day(received, jurisdiction="CCPA", extended=True) == date(2026, 4, 5)
    ack = sla.acknowledge_by(received, "CCPA").astimezone(BERLIN).date()
    assert ack == date(2026, 1, 19)  # 10 business days, 6 Jan is no German federal holiday
    assert sla.acknowledge_by(received, "GDPR") is None
