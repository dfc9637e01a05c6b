"""The retention rules of the data map, one per collection, with the cutoff a run applies.

A rule's clock is the collection's ``retention.timestamp_field``; a row whose clock is before
``now - period`` has expired (a row with no clock yet, such as an ID document not checked, has
not). Periods are counted on the calendar (P8Y from 29 February is 28 February), never as 365
days. Collections whose retention runs from an event the product does not see (account
closure, last payout) have no clock: the run lists them as not enforced here, with their basis.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from include.dsr.core.data_map import DURATION_PATTERN

if TYPE_CHECKING:
    from include.dsr.core.data_map import Collection, DataMap, System


def minus_period(moment: datetime, period: str) -> datetime:
    """``moment`` minus an ISO-8601 period of years, months and days, on the calendar."""
    match = DURATION_PATTERN.match(period)
    if not match:
        raise ValueError(f"not an ISO-8601 period: {period!r}")
    years, months, days = (int(g or 0) for g in match.groups())
    index = moment.year * 12 + (moment.month - 1) - (years * 12 + months)
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day) - timedelta(days=days)


@dataclass(frozen=True)
class RetentionRule:
    system: str
    collection: str
    period: str
    clock: str | None
    action: str
    basis: str
    legal_hold: bool
    only_when: dict = field(default_factory=dict)

    def cutoff(self, now: datetime) -> datetime:
        return minus_period(now, self.period)

    def next_due(self, oldest_clock: datetime | date | str | None) -> str | None:
        """When the oldest row still kept expires (ISO), or None when there is none."""
        if oldest_clock is None:
            return None
        if isinstance(oldest_clock, str):  # SQLite's min() of a date column comes back as text
            oldest_clock = datetime.fromisoformat(oldest_clock)
        moment = (
            oldest_clock if isinstance(oldest_clock, datetime) else datetime.combine(oldest_clock, datetime.min.time())
        )
        match = DURATION_PATTERN.match(self.period)
        assert match is not None
        years, months, days = (int(g or 0) for g in match.groups())
        index = moment.year * 12 + (moment.month - 1) + years * 12 + months
        year, month = divmod(index, 12)
        day = min(moment.day, calendar.monthrange(year, month + 1)[1])
        return (moment.replace(year=year, month=month + 1, day=day) + timedelta(days=days)).isoformat()


def rule_of(system: System, coll: Collection) -> RetentionRule | None:
    if coll.retention is None:
        return None
    r = coll.retention
    return RetentionRule(
        system.key, coll.name, r.period, r.timestamp_field, r.action, r.basis, r.legal_hold, dict(r.only_when)
    )


def platform_rules(
    data_map: DataMap, system_key: str = "fabconnect_app"
) -> tuple[list[RetentionRule], list[RetentionRule]]:
    """``(enforced, not enforced)``: the rules of the system's personal collections with a clock,
    children first (a row is deleted before the row it points at), and those without one."""
    from include.dsr.connectors.sql_erasure import deletion_order

    system = data_map.system(system_key)
    order = {name: i for i, name in enumerate(deletion_order(system))}
    rules = [rule for c in system.collections if c.personal and (rule := rule_of(system, c)) is not None]
    enforced = sorted((r for r in rules if r.clock), key=lambda r: order[r.collection])
    return enforced, [r for r in rules if not r.clock]
