"""Deadlines of a data-subject request (GDPR Art. 12(3), Regulation 1182/71; CCPA).

GDPR: due = the same calendar day one month after ``received_at``; if that day does not
exist, the last day of that month; if it is a Saturday, Sunday or public holiday of the
controller's country, the next working day. An extension makes it received + 3 months
by the same rules. CCPA: acknowledge within 10 business days, answer within 45 calendar
days, one extension of 45 more. Holidays come from the maintained ``holidays`` package.

What moves a deadline after intake (extensions, identity-verification pauses) is in
:mod:`include.dsr.sla.rules`; the on-track / at-risk / breached status in
:mod:`include.dsr.sla.status`.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from include.dsr.core.calendar import CONTROLLER_COUNTRY as DEFAULT_COUNTRY
from include.dsr.core.calendar import CONTROLLER_TZ

GDPR_MONTHS = 1
GDPR_EXTENDED_MONTHS = 3
CCPA_DAYS = 45
CCPA_EXTENSION_DAYS = 45
CCPA_ACK_BUSINESS_DAYS = 10
#: CCPA regulations §7026(f): an opt-out of sale / sharing is complied with within 15 business
#: days, with no extension. The product's ``objection`` right is that opt-out under CCPA.
CCPA_OPT_OUT_BUSINESS_DAYS = 15
CCPA_OPT_OUT_RIGHT = "objection"


@lru_cache(maxsize=64)
def _holidays(country: str, year: int):
    import holidays

    return holidays.country_holidays(country, years=year)


def is_working_day(day: date, country: str = DEFAULT_COUNTRY) -> bool:
    return day.weekday() < 5 and day not in _holidays(country, day.year)


def next_working_day(day: date, country: str = DEFAULT_COUNTRY) -> date:
    while not is_working_day(day, country):
        day += timedelta(days=1)
    return day


def add_months(day: date, months: int) -> date:
    """Same calendar day ``months`` later, or the last day of that month if it has no such day."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def add_business_days(day: date, count: int, country: str = DEFAULT_COUNTRY) -> date:
    while count > 0:
        day += timedelta(days=1)
        if is_working_day(day, country):
            count -= 1
    return day


def _local_day(moment: datetime) -> date:
    if moment.tzinfo is None:
        raise ValueError("received_at must carry a timezone (ISO-8601 with offset or Z)")
    return moment.astimezone(CONTROLLER_TZ).date()


def end_of_day(day: date) -> datetime:
    """23:59:59 controller time on ``day``, as UTC (DST-aware): the last moment a deadline day allows."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=CONTROLLER_TZ).astimezone(UTC)


def due_at(
    received_at: datetime,
    jurisdiction: str = "GDPR",
    extended: bool = False,
    country: str = DEFAULT_COUNTRY,
    right: str | None = None,
) -> datetime:
    """End of the day by which the answer is due, as an aware UTC datetime.

    Days are counted in the controller's time zone: a request that arrives at 00:30 Berlin
    time on 1 April (22:30 UTC on 31 March) was received on 1 April. Under CCPA an objection
    (opt-out of sale / sharing) is due in 15 business days, extended or not.
    """
    received = _local_day(received_at)
    if jurisdiction == "CCPA" and right == CCPA_OPT_OUT_RIGHT:
        return end_of_day(add_business_days(received, CCPA_OPT_OUT_BUSINESS_DAYS, country))
    if jurisdiction == "CCPA":
        days = CCPA_DAYS + (CCPA_EXTENSION_DAYS if extended else 0)
        return end_of_day(received + timedelta(days=days))
    months = GDPR_EXTENDED_MONTHS if extended else GDPR_MONTHS
    return end_of_day(next_working_day(add_months(received, months), country))


def acknowledge_by(
    received_at: datetime, jurisdiction: str = "GDPR", country: str = DEFAULT_COUNTRY
) -> datetime | None:
    """CCPA's acknowledgement deadline (10 business days); GDPR sets none of its own."""
    if jurisdiction != "CCPA":
        return None
    return end_of_day(add_business_days(_local_day(received_at), CCPA_ACK_BUSINESS_DAYS, country))
