"""Art. 19 for the rights that change data (restriction and its lift, rectification, objection):
which recipients must be told, their ledger rows, and whether a request may close; and the
checks record and the close those rights share.

The recipients are the partners the resolved subject's data went to (``shared_with`` in the
data map), narrowed by the right where it concerns only some of them. Each gets a ledger row
under the right's action, pending until its channel answers (``rights.partner_exchange``) or ops
record a manual partner's answer; a request closes once no automated partner still owes one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from include.dsr.ledger.api import SystemUpdate
from include.dsr.rights.partner_exchange import action_of

if TYPE_CHECKING:
    from include.dsr.identity.resolver import ResolvedSubject
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)
MANUAL_FILE = "manual_targets.json"


def staged_subject(rt: Runtime, request_id: str) -> ResolvedSubject:
    return rt.staging(request_id).get_subjects()[0]


def plan(rt: Runtime, request_id: str, kind: str, systems: set[str] | None = None) -> dict:
    """Record a pending row per recipient to tell; returns the automated and manual targets.

    :param kind: the partner request type (``restriction``, ``restriction_lift``, ...)
    :param systems: only these recipients (default: every recipient of the subject)
    """
    subject = staged_subject(rt, request_id)
    recipients = subject.recipients if systems is None else subject.recipients & systems
    automated, manual = [], []
    for system in rt.data_map.partners():
        if system.key in recipients:
            target = {"system": system.key, "channel": system.channel}
            (manual if system.channel == "manual" else automated).append(target)
    existing = {r.system for r in rt.ledger.system_results(request_id) if r.action == action_of(kind)}  # a re-run
    rt.ledger.upsert_system_results(
        [
            SystemUpdate(request_id, t["system"], action_of(kind), "pending")
            for t in automated + manual
            if t["system"] not in existing
        ]
    )
    rt.staging(request_id).put_json(MANUAL_FILE, manual)
    log.info("request %s: %s recipients to tell (%s manual)", request_id, len(automated) + len(manual), len(manual))
    return {"partners": automated, "manual": manual}


def pending_once(rt: Runtime, request_id: str, system: str, action: str) -> None:
    """Record ``system``'s row as pending, unless a run of the request recorded it before (a
    re-run never turns a completed row back to pending)."""
    if not any(r.system == system and r.action == action for r in rt.ledger.system_results(request_id)):
        rt.ledger.upsert_system_result(request_id, system, action, "pending")


def owed(rt: Runtime, request_id: str, kind: str) -> list[str]:
    """Why the request cannot close yet: each automated recipient that has not confirmed."""
    rows = [r for r in rt.ledger.system_results(request_id) if r.action == action_of(kind)]
    partners = {s.key: s for s in rt.data_map.partners()}
    return [
        r.outcome or f"{r.system} has not confirmed"
        for r in rows
        if r.system in partners and partners[r.system].channel != "manual" and r.status != "completed"
    ]


def told(rt: Runtime, request_id: str, kind: str) -> tuple[list[str], list[str]]:
    """Names of the recipients that confirmed, and of those (manual) that refused or did not answer."""
    rows = [r for r in rt.ledger.system_results(request_id) if r.action == action_of(kind)]
    partners = {s.key: s for s in rt.data_map.partners()}
    confirmed, exceptions = [], []
    for r in rows:
        system = partners.get(r.system)
        if system is None:
            continue
        name = system.recipient.legal_name if system.recipient else system.name
        (confirmed if r.status == "completed" else exceptions).append(name)
    return sorted(confirmed), sorted(exceptions)


def record_checks(
    rt: Runtime, request_id: str, collection: str, frame, expectations: Callable, facts: dict[str, Any]
) -> list:
    """Run Great Expectations on ``frame`` (no values: keys, flags, counts), record the outcome as
    ``checks.passed`` / ``checks.failed`` with ``facts``, and return the failed outcomes.

    :param expectations: ``gx.expectations`` -> the expectations to run
    """
    from include.dsr.checks.gx import GxRunner

    gx = GxRunner(f"dsr_{collection}_checks")
    outcomes = gx.outcomes(collection, frame, expectations(gx.E))
    failed = [o for o in outcomes if not o.success]
    rt.ledger.append_event(
        request_id,
        "checks.failed" if failed else "checks.passed",
        {"expectations": len(outcomes), "failures": len(failed), **facts},
    )
    return failed


def close_when_told(
    rt: Runtime,
    request_id: str,
    kind: str,
    text: str,
    outcome: str,
    notify: Callable[[list[str], list[str]], object] | None = None,
    status: str = "completed",
) -> dict:
    """Close the request once every automated recipient confirmed; else leave it visibly open.

    :param notify: sends the subject's notice, given the recipients told and those that did not confirm
    :raises TerminalError: a recipient still owes its answer (the request stays ``waiting_on_partner``)
    """
    from datetime import UTC, datetime

    from include.dsr.core.errors import TerminalError

    waiting = owed(rt, request_id, kind)
    if waiting:
        rt.ledger.set_status(request_id, "waiting_on_partner", outcome_summary="not closed: " + "; ".join(waiting))
        raise TerminalError(f"request {request_id} stays open until its recipients confirm: " + "; ".join(waiting))
    confirmed, exceptions = told(rt, request_id, kind)
    if notify is not None:
        notify(confirmed, exceptions)
    if exceptions and status == "completed":
        outcome, text = "completed_with_exceptions", f"{text}; not confirmed by {', '.join(exceptions)}"
    rt.ledger.close_request(request_id, status, datetime.now(UTC), text, outcome=outcome)
    rt.staging(request_id).clear()
    rt.ledger.verify_chain_or_raise()
    return {"request_id": request_id, "outcome": outcome}
