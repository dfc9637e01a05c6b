"""Intake shared by every right: validate the conf, record the request, verify, resolve, decide conflicts.

Each step is a transaction that gives the same result when re-run: the ledger upserts and
events carry dedupe keys. Steps return small dicts of ids and counts (what goes to XCom);
the resolved identities go to the request's staging area, never to XCom or logs.

Resolution follows :mod:`include.dsr.identity.resolver`: only the identity the verification
covers links accounts. When another identity of the request belongs to someone else, the
request stops before anything is gathered (:data:`CONFLICT`): the ledger records which
identity types disagree (counts, never values) and ops decide in a human-in-the-loop task
(:func:`apply_identity_decision`): go on with the verified identity alone, or refuse with a
reason that the subject is sent.

A dry run (``dry_run: true``) records nothing: it validates, resolves in memory and reports.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.dsr.core.errors import TerminalError
from include.dsr.core.fingerprint import subject_fingerprint
from include.dsr.core.pii import redact
from include.dsr.core.request import VERIFICATION_BOUND_TO_ACCOUNT, DSRRequest, parse_request, verified_types
from include.dsr.identity.resolver import IdentityResolver, ResolvedSubject, SubjectQuery
from include.dsr.sla import deadlines

if TYPE_CHECKING:
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)

PROCEED, CONFLICT = "proceed", "conflict"
#: The two answers ops can give when a request's identities belong to different people.
PROCEED_VERIFIED_ONLY = "Proceed with the verified identity only"
REFUSE_CONFLICT = "Refuse the request"
DECISION_OPTIONS = [PROCEED_VERIFIED_ONLY, REFUSE_CONFLICT]
DEFAULT_CONFLICT_REASON = (
    "The identities given in your request belong to different people, so we could not establish "
    "that all of them are yours."
)


def _now() -> datetime:
    return datetime.now(UTC)


def start_request(rt: Runtime, conf: dict, right: str, dag_run_id: str | None = None) -> dict:
    """Validate the conf and record the request with its due date (idempotent per request_id).

    A dry run is validated only: it is not recorded, and later steps report instead of acting.
    """
    request = parse_request(conf, right)
    started = {
        "request_id": request.request_id,
        "verified": request.verification is not None,
        "dry_run": request.dry_run,
        "closed": False,
    }
    if request.dry_run:
        log.info("request %s (%s) is a dry run: nothing is recorded", request.request_id, right)
        return started
    fingerprint = subject_fingerprint(request.subject.identities(), rt.fingerprint_secret)
    due = deadlines.due_at(request.received_at, request.jurisdiction, right=request.right)
    row = rt.ledger.record_request(
        request.request_id, right, request.jurisdiction, fingerprint, request.received_at, due, dag_run_id=dag_run_id
    )
    if not row.is_open:
        log.info(
            "request %s (%s) was closed on %s (%s): nothing to do",
            request.request_id,
            right,
            row.closed_at.isoformat() if row.closed_at else "?",
            row.outcome or row.status,
        )
        return {**started, "due_at": row.due_at.isoformat(), "closed": True}
    rt.ledger.set_status(request.request_id, "verifying" if request.verification is None else "in_progress")
    log.info("request %s (%s) recorded, due %s", request.request_id, right, row.due_at.isoformat())
    return {**started, "due_at": row.due_at.isoformat(), "closed": False}


def start_verified_requests(
    rt: Runtime, requests: dict[str, DSRRequest], right: str, dag_run_id: str | None = None
) -> dict[str, bool | TerminalError]:
    """:func:`start_request` then :func:`record_verification` for many verified requests at once (a
    wave's lines, parsed): the same rows and events, a few statements for all of them.

    :returns: per request id True when it is open (recorded and verified), False when it was
        closed before (nothing to do), or the error refusing it (its id belongs to another
        subject or right)
    """
    from include.dsr.ledger.api import NewRequest

    new = [
        NewRequest(
            rid,
            right,
            request.jurisdiction,
            subject_fingerprint(request.subject.identities(), rt.fingerprint_secret),
            request.received_at,
            deadlines.due_at(request.received_at, request.jurisdiction, right=request.right),
            dag_run_id,
        )
        for rid, request in requests.items()
    ]
    with rt.ledger.batch():
        rows = rt.ledger.record_requests(new)
        started: dict[str, bool | TerminalError] = {
            rid: row if isinstance(row, TerminalError) else row.is_open for rid, row in rows.items()
        }
        opened = [rid for rid, is_open in started.items() if is_open is True]
        rt.ledger.set_statuses(opened, "in_progress")
        rt.ledger.append_events(
            [
                (rid, "identity.verified", _verification_payload(requests[rid]), f"{rid}:identity.verified")
                for rid in opened
            ]
        )
    log.info("%s requests (%s) recorded: %s open", len(requests), right, len(opened))
    return started


def owns_ledger_row(rt: Runtime, conf: dict, right: str) -> str | None:
    """The request id of ``conf`` if the ledger row with that id is this conf's request, else None
    (the conf was refused before recording, or its id belongs to another subject or right)."""
    try:
        request = parse_request(conf, right)
    except TerminalError:
        return None
    row = rt.ledger.get_request(request.request_id)
    if row is None or request.dry_run:
        return None
    fingerprint = subject_fingerprint(request.subject.identities(), rt.fingerprint_secret)
    return request.request_id if (row.subject_fingerprint, row.right) == (fingerprint, right) else None


def notices(rt: Runtime):
    from include.dsr.notify.notices import Notices

    return Notices(rt.ledger, controller=rt.data_map.controller)


def acknowledge(rt: Runtime, conf: dict, request_id: str) -> bool:
    """Tell the subject the request arrived (once; phone-only subjects are told by ops)."""
    from include.dsr.notify.notices import recipient_from_conf

    recipient = recipient_from_conf(conf, request_id, required=False)
    if recipient:
        notices(rt).acknowledgement(request_id, recipient)
    return recipient is not None


def record_verification(rt: Runtime, conf: dict, right: str, confirmed_by: str | None = None) -> dict:
    """Log how the identity was verified: from the conf, or by ops in the approval task."""
    request = parse_request(conf, right)
    payload = _verification_payload(request, confirmed_by)
    rt.ledger.append_event(
        request.request_id, "identity.verified", payload, dedupe_key=f"{request.request_id}:identity.verified"
    )
    rt.ledger.set_status(request.request_id, "in_progress")
    return {"request_id": request.request_id, "method": payload["method"]}


def _verification_payload(request: DSRRequest, confirmed_by: str | None = None) -> dict:
    """The ``identity.verified`` facts: from the request's verification, or ops' confirmation."""
    if request.verification is not None:
        payload = {"method": request.verification.method, "verified_at": request.verification.verified_at.isoformat()}
    else:
        payload = {"method": "ops_confirmed", "verified_at": _now().isoformat(), "confirmed_by": confirmed_by or "ops"}
    payload["covers"] = sorted(verified_types(request))
    return payload


def subject_query(request: DSRRequest) -> SubjectQuery:
    ids = request.subject.identities()
    method = request.verification.method if request.verification else None
    return SubjectQuery(
        request.request_id,
        ids.get("email"),
        ids.get("phone"),
        ids.get("account_id"),
        verified_types(request),
        VERIFICATION_BOUND_TO_ACCOUNT.get(method or "", frozenset()),
        received_at=request.received_at,
    )


def resolve_query(rt: Runtime, query: SubjectQuery) -> ResolvedSubject:
    """Resolve one subject through the identity graph (nothing is staged or recorded)."""
    (subject,) = IdentityResolver(rt.app_engine, rt.data_map, rt.hash_secret).resolve([query])
    return subject


def resolve(rt: Runtime, conf: dict, right: str) -> dict:
    """Resolve the subject and stage its identities; on a conflict stop for ops.

    A request resolved before (a new run of it) keeps the identities staged then: after an
    erasure began, the platform DB no longer holds them, and they must outlive it until the
    request closes.

    :returns: ``{"route": "proceed" | "conflict", ...}`` with counts only.
    """
    request = parse_request(conf, right)
    staged = staged_subject(rt, request.request_id, request.request_id)
    if staged is not None:
        log.info("request %s: resolved before; going on with the identities staged then", request.request_id)
        return _route(request.request_id, staged)
    subject = resolve_query(rt, subject_query(request))
    if subject.conflicts:
        return {"request_id": request.request_id, "route": CONFLICT, **record_conflict(rt, request, subject)}
    return _stage_resolved(rt, request.request_id, subject, subject.summary())


def staged_subject(rt: Runtime, batch_id: str, request_id: str) -> ResolvedSubject | None:
    """The subject ``request_id`` was resolved to, if it was (staged under ``batch_id``)."""
    staging = rt.staging(batch_id)
    if not staging.exists("subjects.json"):
        return None
    resolved = any(e.event_type == "subject.resolved" for e in rt.ledger.events(request_id))
    return next((s for s in staging.get_subjects() if s.request_id == request_id), None) if resolved else None


def record_conflict(rt: Runtime, request: DSRRequest, subject: ResolvedSubject) -> dict:
    """Record that the request's identities belong to different people (types, never values)."""
    facts = {"conflicting_identity_types": sorted(subject.conflicts), "verified": sorted(verified_types(request))}
    rt.ledger.append_event(
        request.request_id, "identity.conflict", facts, dedupe_key=f"{request.request_id}:identity.conflict"
    )
    rt.ledger.set_status(
        request.request_id,
        "verifying",
        outcome_summary="identities of the request belong to different people: waiting for ops to decide",
    )
    log.warning(
        "request %s: identity conflict on %s; nothing gathered, ops decide",
        request.request_id,
        sorted(subject.conflicts),
    )
    return facts


def record_resolved(rt: Runtime, request_id: str, subject: ResolvedSubject) -> None:
    """The subject's keyed identities in the registry and the resolution (counts) in the ledger."""
    rt.registry.record_subject_keys(request_id, subject.keys(rt.hash_secret))
    rt.ledger.append_event(
        request_id, "subject.resolved", subject.summary(), dedupe_key=f"{request_id}:subject.resolved"
    )


def _stage_resolved(rt: Runtime, request_id: str, subject: ResolvedSubject, summary: dict) -> dict:
    rt.staging(request_id).put_subjects([subject])
    record_resolved(rt, request_id, subject)
    return _route(request_id, subject)


def _route(request_id: str, subject: ResolvedSubject) -> dict:
    summary = subject.summary()
    return {
        "request_id": request_id,
        "route": PROCEED,
        "accounts": summary["accounts"],
        "nothing_found": not subject.found,
    }


def conflict_body(facts: dict) -> str:
    """Markdown for the ops decision task (identity types only, never values)."""
    return (
        "The identities of this request do not belong to one person: "
        f"**{', '.join(facts.get('conflicting_identity_types', []))}** point(s) to another account than the "
        f"verified identity (verification covers {', '.join(facts.get('verified', []))}). Nothing has been "
        "gathered or changed. The identities are in this run's conf.\n\n"
        f"- **{PROCEED_VERIFIED_ONLY}**: the request goes on with the verified identity alone; the other "
        "identities are dropped.\n"
        f"- **{REFUSE_CONFLICT}**: the subject is told why (the reason below) and of the right to complain."
    )


def apply_identity_decision(rt: Runtime, conf: dict, right: str, reply: dict[str, Any] | None) -> dict:
    """Carry out ops' answer to a conflict: re-resolve with the verified identity alone, or refuse.

    :param reply: the HITL task's result (``chosen_options``, ``params_input``, ``responded_by_user``)
    :raises TerminalError: no answer was recorded, or the verified identity alone still conflicts
    """
    request = parse_request(conf, right)
    choice = ((reply or {}).get("chosen_options") or [None])[0]
    by = ((reply or {}).get("responded_by_user") or {}).get("name") or "ops"
    if choice not in DECISION_OPTIONS:
        raise TerminalError(
            f"request {request.request_id}: no decision on the identity conflict was recorded; "
            f"answer the decide_identity task with one of {DECISION_OPTIONS}"
        )
    if choice == REFUSE_CONFLICT:
        reason = redact(((reply or {}).get("params_input") or {}).get("reason") or DEFAULT_CONFLICT_REASON, limit=500)
        rt.ledger.append_event(
            request.request_id,
            "identity.decided",
            {"decision": "refuse", "by": by},
            dedupe_key=f"{request.request_id}:identity.decided",
        )
        refuse(rt, request.request_id, reason, conf)
        return {"request_id": request.request_id, "route": "refused"}
    subject = resolve_query(rt, subject_query(request).only_anchor())
    if subject.conflicts:  # cannot happen with one identity; refuse to guess if it ever does
        raise TerminalError(f"request {request.request_id}: the verified identity alone still conflicts")
    rt.ledger.append_event(
        request.request_id,
        "identity.decided",
        {"decision": "verified_identity_only", "by": by},
        dedupe_key=f"{request.request_id}:identity.decided",
    )
    rt.ledger.set_status(request.request_id, "in_progress", outcome_summary="going on with the verified identity only")
    return _stage_resolved(rt, request.request_id, subject, subject.summary())


def mark_failed(rt: Runtime, request_id: str, reason: str) -> None:
    """Record a task's final failure on the request (the reason names ids, never identities)."""
    row = rt.ledger.get_request(request_id)
    if row is not None and row.closed_at is None:  # a closed request keeps its outcome
        rt.ledger.set_status(request_id, "failed", outcome_summary=redact(reason, limit=500))


def refuse(rt: Runtime, request_id: str, reason: str, conf: dict | None = None) -> None:
    """Close the request as refused; the subject is told why and of the complaint right (Art. 12(4))."""
    from include.dsr.notify.notices import recipient_from_conf

    recipient = recipient_from_conf(conf or {}, request_id, required=False)
    if recipient:
        notices(rt).refusal(request_id, recipient, [reason])
    rt.ledger.close_request(request_id, "refused", _now(), reason, outcome="refused")
