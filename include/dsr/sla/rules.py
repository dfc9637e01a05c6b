"""Rules that move a request's deadline: extensions and identity-verification pauses.

**Extension** (Art. 12(3), CCPA): the deadline becomes ``due_at(received_at,
extended=True)`` (received + 3 months, or + 90 days under CCPA). It is allowed once, with a
non-empty reason, while the first deadline has not passed, and only together with a notice
to the subject sent before that first deadline. :func:`extend_request` sends the notice
first (through the callable it is given, which appends the ``notice.sent`` event) and
records the extension only after that, so an extension never stands in the ledger without
its notice.

**Pauses** for identity verification (GDPR.md "Time limits"; EDPB Guidelines 01/2022): the
clock may stop while the controller waits for information it asked for to verify the
subject's identity, but only if it asked *without undue delay*. Our interpretation:

- A pause starts when the extra information is requested (``sla.paused``, with reason)
  and ends when it arrives (``sla.resumed``, with reason). Every pause is recorded.
- "Without undue delay" is read as: the request for information went out within
  :data:`PAUSE_PROMPT_WORKING_DAYS` working days (controller's calendar) of ``received_at``.
  A pause started later is still recorded, as evidence, with ``counts: false``, and does
  not move the deadline: the delay was the controller's. This number is a policy choice
  to be confirmed by counsel; the regulation names none.
- A counted pause moves the deadline by the calendar days it lasted, counted in the
  controller's time zone (paused and resumed on the same day: 0 days). The moved day rolls
  to the next working day. While a counted pause is open, the deadline moves with the
  clock: the request cannot breach while the controller waits for the subject.
- One pause at a time; pauses are refused on a closed or already breached request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from include.dsr.core.errors import TerminalError
from include.dsr.ledger.schema import UnknownRequestError
from include.dsr.sla.deadlines import (
    CCPA_OPT_OUT_RIGHT,
    CONTROLLER_TZ,
    DEFAULT_COUNTRY,
    add_business_days,
    due_at,
    end_of_day,
    next_working_day,
)

if TYPE_CHECKING:
    from include.dsr.ledger.api import EventRow, Ledger, RequestRow

log = logging.getLogger(__name__)

#: Working days within which asking for identity information counts as "without undue delay".
PAUSE_PROMPT_WORKING_DAYS = 5
PAUSED = "sla.paused"
RESUMED = "sla.resumed"
NOTICE_SENT = "notice.sent"
EXTENSION_NOTICE = "extension"


class SlaRuleError(TerminalError):
    """An SLA rule refuses the action; the message says which rule and what to do."""


class ExtensionRefusedError(SlaRuleError):
    """The deadline cannot be extended (no reason, too late, already extended, closed)."""


class PauseRefusedError(SlaRuleError):
    """The clock cannot be paused or resumed in the request's current state."""


@dataclass(frozen=True)
class Pause:
    """One identity-verification pause read back from the ledger's events."""

    number: int
    reason: str
    paused_at: datetime
    counts: bool
    resumed_at: datetime | None = None
    resume_reason: str | None = None

    def days(self, now: datetime) -> int:
        """Calendar days (controller time) the pause lasted, or has lasted so far."""
        end = self.resumed_at or max(now, self.paused_at)
        return (_local_date(end) - _local_date(self.paused_at)).days


def _local_date(moment: datetime):
    return moment.astimezone(CONTROLLER_TZ).date()


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def pauses(events: Iterable[EventRow]) -> list[Pause]:
    """The pauses recorded in a request's events, in order."""
    found: list[Pause] = []
    for event in events:
        payload = event.payload
        if event.event_type == PAUSED:
            found.append(
                Pause(
                    payload["pause_no"], payload["reason"], _parse_time(payload["paused_at"]), bool(payload["counts"])
                )
            )
        elif event.event_type == RESUMED and found and found[-1].resumed_at is None:
            last = found[-1]
            found[-1] = Pause(
                last.number,
                last.reason,
                last.paused_at,
                last.counts,
                _parse_time(payload["resumed_at"]),
                payload["reason"],
            )
    return found


def paused_days(events: Iterable[EventRow], now: datetime) -> int:
    """Days of counted pauses (the open one up to ``now``)."""
    return sum(p.days(now) for p in pauses(events) if p.counts)


def shift_deadline(deadline: datetime, days: int, country: str = DEFAULT_COUNTRY) -> datetime:
    """``deadline`` moved by ``days`` calendar days, rolled to the next working day."""
    if days <= 0:
        return deadline
    return end_of_day(next_working_day(_local_date(deadline) + timedelta(days=days), country))


def effective_deadline(
    row: RequestRow, events: Iterable[EventRow], now: datetime, country: str = DEFAULT_COUNTRY
) -> datetime:
    """The deadline in force: extended if extended, moved by counted pauses."""
    return shift_deadline(row.effective_due_at, paused_days(events, now), country)


def first_deadline(
    row: RequestRow, events: Iterable[EventRow], now: datetime, country: str = DEFAULT_COUNTRY
) -> datetime:
    """The one-month (CCPA: 45-day) deadline, moved by counted pauses; extensions must precede it."""
    return shift_deadline(row.due_at, paused_days(events, now), country)


def pause_prompt_limit(received_at: datetime, country: str = DEFAULT_COUNTRY) -> datetime:
    """Last moment a request for identity information counts as sent without undue delay."""
    return end_of_day(add_business_days(_local_date(received_at), PAUSE_PROMPT_WORKING_DAYS, country))


def _open_row(ledger: Ledger, request_id: str, error: type[SlaRuleError]) -> RequestRow:
    row = ledger.get_request(request_id)
    if row is None:
        raise UnknownRequestError(f"request {request_id!r} is not in the ledger; record it before changing its SLA")
    if row.closed_at is not None:
        raise error(f"request {request_id!r} is closed ({row.status}); its deadline can no longer change")
    return row


def _reason(reason: str | None, what: str, error: type[SlaRuleError]) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise error(f"{what} needs a reason (GDPR Art. 12(3) / evidence); give a non-empty reason")
    return reason.strip()


def pause_clock(ledger: Ledger, request_id: str, reason: str, at: datetime, country: str = DEFAULT_COUNTRY) -> EventRow:
    """Record that identity information was requested at ``at``; appends ``sla.paused``.

    Calling it again for the pause that is open returns that pause's event (re-run).

    :raises PauseRefusedError: no reason, request closed or breached, or ``at`` before receipt.
    """
    reason = _reason(reason, "a pause", PauseRefusedError)
    row = _open_row(ledger, request_id, PauseRefusedError)
    events = ledger.events(request_id)
    recorded = pauses(events)
    if recorded and recorded[-1].resumed_at is None:
        if recorded[-1].reason == reason:
            return next(e for e in reversed(events) if e.event_type == PAUSED)
        raise PauseRefusedError(f"request {request_id!r} is already paused; resume it before pausing again")
    if at < row.received_at:
        raise PauseRefusedError(f"request {request_id!r}: a pause cannot start before the request was received")
    if at > effective_deadline(row, events, at, country):
        raise PauseRefusedError(f"request {request_id!r}: the deadline has passed; a pause can no longer move it")
    limit = pause_prompt_limit(row.received_at, country)
    number = len(recorded) + 1
    payload = {"pause_no": number, "reason": reason, "paused_at": at, "counts": at <= limit, "prompt_limit": limit}
    event = ledger.append_event(request_id, PAUSED, payload, dedupe_key=f"{request_id}:{PAUSED}:{number}")
    log.info("request %s: clock paused (pause %s, counts=%s)", request_id, number, payload["counts"])
    return event


def resume_clock(ledger: Ledger, request_id: str, reason: str, at: datetime) -> EventRow:
    """Record that the requested information arrived at ``at``; appends ``sla.resumed``.

    :raises PauseRefusedError: no reason, not paused, or ``at`` before the pause started.
    """
    reason = _reason(reason, "resuming", PauseRefusedError)
    _open_row(ledger, request_id, PauseRefusedError)
    recorded = pauses(ledger.events(request_id))
    if not recorded or recorded[-1].resumed_at is not None:
        raise PauseRefusedError(f"request {request_id!r} is not paused; nothing to resume")
    pause = recorded[-1]
    if at < pause.paused_at:
        raise PauseRefusedError(f"request {request_id!r}: resumed_at is before the pause started")
    payload = {
        "pause_no": pause.number,
        "reason": reason,
        "resumed_at": at,
        "counts": pause.counts,
        "paused_days": pause.days(at),
    }
    event = ledger.append_event(request_id, RESUMED, payload, dedupe_key=f"{request_id}:{RESUMED}:{pause.number}")
    log.info("request %s: clock resumed after %s days (pause %s)", request_id, payload["paused_days"], pause.number)
    return event


def extension_notice(events: Iterable[EventRow]) -> EventRow | None:
    """The ``notice.sent`` event of the extension notice, if one was sent."""
    return next((e for e in events if e.event_type == NOTICE_SENT and e.payload.get("kind") == EXTENSION_NOTICE), None)


def check_extension(
    row: RequestRow, events: list[EventRow], reason: str, now: datetime, country: str = DEFAULT_COUNTRY
) -> datetime:
    """The extended deadline, if an extension is allowed now.

    :raises ExtensionRefusedError: no reason, closed, already extended, or the first deadline passed.
    """
    _reason(reason, "an extension", ExtensionRefusedError)
    if row.closed_at is not None:
        raise ExtensionRefusedError(f"request {row.request_id!r} is closed ({row.status}); it cannot be extended")
    if row.extended_due_at is not None:
        raise ExtensionRefusedError(f"request {row.request_id!r} is already extended; only one extension is allowed")
    first = first_deadline(row, events, now, country)
    if now > first:
        raise ExtensionRefusedError(
            f"request {row.request_id!r}: the first deadline ({first.isoformat()}) has passed; an extension must "
            "be decided and notified before it. Answer the request now."
        )
    if row.jurisdiction == "CCPA" and row.right == CCPA_OPT_OUT_RIGHT:
        raise ExtensionRefusedError(
            f"request {row.request_id!r}: a CCPA opt-out of sale / sharing cannot be extended (15 business days)"
        )
    return due_at(row.received_at, row.jurisdiction, extended=True, country=country, right=row.right)


def extend_request(
    ledger: Ledger,
    request_id: str,
    reason: str,
    now: datetime,
    send_notice: Callable[[RequestRow, datetime], EventRow],
    country: str = DEFAULT_COUNTRY,
) -> RequestRow:
    """Extend the deadline: check the rules, send the notice, then record the extension.

    A re-run with the same reason after success returns the row unchanged.

    :param send_notice: sends the extension notice for ``(row, new_due)`` and returns its
        ``notice.sent`` event (e.g. :func:`include.dsr.notify.notices.send_extension_notice`).
    :raises ExtensionRefusedError: the extension is not allowed, or the notice went out too late.
    """
    reason = _reason(reason, "an extension", ExtensionRefusedError)
    row = ledger.get_request(request_id)
    if row is None:
        raise UnknownRequestError(f"request {request_id!r} is not in the ledger")
    if row.extended_due_at is not None and row.extension_reason == reason:
        return row
    events = ledger.events(request_id)
    new_due = check_extension(row, events, reason, now, country)
    notice = send_notice(row, new_due)
    first = first_deadline(row, events, now, country)
    if notice.created_at > first:
        raise ExtensionRefusedError(
            f"request {request_id!r}: the extension notice was recorded after the first "
            "deadline; the extension is not valid"
        )
    extended = ledger.extend(request_id, new_due, reason)
    log.info("request %s: deadline extended", request_id)
    return extended


def extension_is_valid(row: RequestRow, events: list[EventRow], now: datetime, country: str = DEFAULT_COUNTRY) -> bool:
    """True when no extension is recorded, or it has a notice recorded before the first deadline."""
    if row.extended_due_at is None:
        return True
    notice = extension_notice(events)
    return notice is not None and notice.created_at <= first_deadline(row, events, now, country)
