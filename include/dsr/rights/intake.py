"""Intake shared by every right: validate the conf, record the request, verify, resolve.

Each step is a transaction that gives the same result when re-run: the ledger upserts and
events carry dedupe keys. Steps return small dicts of ids and counts (what goes to XCom);
the resolved identities go to the request's staging area, never to XCom or logs.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from include.dsr.core.fingerprint import subject_fingerprint
from include.dsr.core.request import DSRRequest, parse_request
from include.dsr.identity.resolver import (
    IdentityResolver,
    ResolvedSubject,
    SubjectQuery,
)
from include.dsr.sla import deadlines

if TYPE_CHECKING:
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def start_request(rt: Runtime, conf: dict, right: str, dag_run_id: str | None = None) -> dict:
    """Validate the conf and record the request with its due date (idempotent per request_id)."""
    request = parse_request(conf, right)
    fingerprint = subject_fingerprint(request.subject.identities(), rt.fingerprint_secret)
    due = deadlines.due_at(request.received_at, request.jurisdiction)
    row = rt.ledger.record_request(
        request.request_id, right, request.jurisdiction, fingerprint, request.received_at, due, dag_run_id=dag_run_id
    )
    rt.ledger.set_status(request.request_id, "verifying" if request.verification is None else "in_progress")
    log.info("request %s (%s) recorded, due %s", request.request_id, right, row.due_at.isoformat())
    return {
        "request_id": request.request_id,
        "due_at": row.due_at.isoformat(),
        "verified": request.verification is not None,
    }


def notices(rt: Runtime):
    from include.dsr.notify.notices import Notices

    return Notices(rt.ledger)


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
    if request.verification is not None:
        payload = {"method": request.verification.method, "verified_at": request.verification.verified_at.isoformat()}
    else:
        payload = {"method": "ops_confirmed", "verified_at": _now().isoformat(), "confirmed_by": confirmed_by or "ops"}
    rt.ledger.append_event(
        request.request_id, "identity.verified", payload, dedupe_key=f"{request.request_id}:identity.verified"
    )
    rt.ledger.set_status(request.request_id, "in_progress")
    return {"request_id": request.request_id, "method": payload["method"]}


def subject_query(request: DSRRequest) -> SubjectQuery:
    ids = request.subject.identities()
    return SubjectQuery(request.request_id, ids.get("email"), ids.get("phone"), ids.get("account_id"))


def mark_failed(rt: Runtime, request_id: str, reason: str) -> None:
    """Record a task's final failure on the request (the reason names ids, never identities)."""
    if rt.ledger.get_request(request_id) is not None:
        rt.ledger.set_status(request_id, "failed", outcome_summary=reason[:500])


def refuse(rt: Runtime, request_id: str, reason: str, conf: dict | None = None) -> None:
    """Close the request as refused; the subject is told why and of the complaint right (Art. 12(4))."""
    from include.dsr.notify.notices import recipient_from_conf

    recipient = recipient_from_conf(conf or {}, request_id, required=False)
    if recipient:
        notices(rt).refusal(request_id, recipient, [reason])
    rt.ledger.close_request(request_id, "refused", _now(), reason)


def resolve(rt: Runtime, request: DSRRequest) -> ResolvedSubject:
    """Resolve the request's subject through the identity graph and stage the identities."""
    resolver = IdentityResolver(rt.app_engine, rt.data_map, rt.hash_secret)
    (subject,) = resolver.resolve([subject_query(request)])
    rt.staging(request.request_id).put_subjects([subject])
    return subject
