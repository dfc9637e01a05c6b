"""Talking to a partner about a batch (one request, or a wave): submit, poll, collect, with each
request's ledger row kept current. Only the requests whose subject the partner received data of
are sent to it.

Partner calls that fail transiently (5xx, timeouts, resets) are retried in place with
exponential backoff before the error reaches Airflow, whose own retries come on top.
The ledger row of the partner moves pending -> waiting -> completed | failed, with the
partner references (no personal data) as evidence, so a silent partner is visible there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from include.dsr.connectors.partner import COMPLETED, FAILED
from include.dsr.core.errors import TerminalError, TransientError
from include.dsr.core.pii import redact
from include.dsr.ledger.api import SystemUpdate
from include.dsr.rights.gathering import EXPORT, stage_result

if TYPE_CHECKING:
    from include.dsr.identity.resolver import ResolvedSubject
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_ATTEMPTS = 3
BACKOFF_BASE_SECONDS = 1.0


def with_backoff(
    call: Callable[[], T], what: str, attempts: int = BACKOFF_ATTEMPTS, base: float = BACKOFF_BASE_SECONDS
) -> T:
    """Run ``call``, retrying ``TransientError`` with 1 s, 2 s, 4 s ... pauses."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except TransientError as exc:
            if attempt == attempts:
                raise
            delay = base * 2 ** (attempt - 1)
            log.warning("%s failed (%s), retry %s/%s in %.0fs", what, exc, attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def flat(refs: dict[str, list[str]]) -> list[str]:
    return [ref for refs_of_request in refs.values() for ref in refs_of_request]


#: The ledger action a right's partner exchange is recorded under.
ACTIONS = {
    "access": EXPORT,
    "portability": EXPORT,
    "erasure": "erase",
    "restriction": "restrict",
    "restriction_lift": "lift",
    "rectification": "rectify",
    "objection": "notify",
}
#: Request type of the read that checks a partner's claim to have erased.
VERIFY = "access"


def action_of(right: str) -> str:
    return ACTIONS.get(right, EXPORT)


def recipients_of(rt: Runtime, batch_id: str, system_key: str) -> list[ResolvedSubject]:
    """The batch's open requests whose subject this partner received data of: only their
    identities go to it (a wave never tells a partner about someone else's customers)."""
    subjects = [s for s in rt.staging(batch_id).get_subjects() if system_key in s.recipients]
    rows = rt.ledger.get_requests([s.request_id for s in subjects])
    return [s for s in subjects if (row := rows.get(s.request_id)) is not None and row.is_open]


def batch_due_at(rt: Runtime, batch_id: str, system_key: str) -> datetime:
    """When the partner's answer is due: the request's deadline, or the earliest of a wave's
    requests that concern the partner."""
    row = rt.ledger.get_request(batch_id)
    if row is not None:
        return row.effective_due_at
    dues = [r.effective_due_at for r in rt.ledger.get_requests(_requests(rt, batch_id, system_key)).values()]
    if not dues:
        raise TerminalError(f"batch {batch_id}: no open request concerns partner {system_key}")
    return min(dues)


def _requests(rt: Runtime, batch_id: str, system_key: str) -> list[str]:
    try:
        return [s.request_id for s in recipients_of(rt, batch_id, system_key)] or [batch_id]
    except Exception:  # nothing staged (the failure came first): the batch is the request
        return [batch_id]


def submit(rt: Runtime, batch_id: str, right: str, system_key: str, verify: bool = False) -> dict:
    """Send (or re-send) the batch's requests to the partner; returns refs and their state.

    :param batch_id: one request's id, or a wave's (each request keeps its own ledger row)
    :param verify: send the read that checks an erasure instead (its refs say ``verify``)
    """
    connector = rt.connector(system_key, batch_id)
    subjects = recipients_of(rt, batch_id, system_key)
    if not subjects:  # every request it concerned is closed (a re-run): nothing to send
        return {"refs": {}, "state": COMPLETED}
    if verify and right == "rectification":  # the check reads the subject under the corrected identities
        subjects = corrected_subjects(rt, batch_id, system_key, subjects)
    kind = VERIFY if verify else right
    details = None if verify else _details(rt, batch_id, right, system_key)
    refs = with_backoff(
        lambda: connector.submit(subjects, kind, "verify" if verify else None, details), f"submit to {system_key}"
    )
    statuses = connector.statuses_at_submit(flat(refs)) or with_backoff(
        lambda: connector.poll(flat(refs)), f"poll {system_key}"
    )
    state = summarize(statuses)
    if state != COMPLETED:
        outcome = f"partner status: {state}" + (" (checking the erasure)" if verify else "")
        with rt.ledger.batch():  # a wave's thousands of rows in one transaction
            rt.ledger.upsert_system_results(
                [
                    SystemUpdate(
                        rid,
                        system_key,
                        action_of(right),
                        "waiting",
                        outcome=outcome,
                        evidence={"partner_refs": {rid: mine}},
                    )
                    for rid, mine in refs.items()
                ]
            )
            for request_id in refs:
                rt.ledger.set_status(request_id, "waiting_on_partner")
    return {"refs": refs, "state": state}


#: Staged per batch by a right whose partner requests carry more than identities (rectification:
#: the corrected values; objection: the purposes stopped), per request and partner.
DETAILS_FILE = "partner_details.json"


def _details(rt: Runtime, batch_id: str, right: str, system_key: str) -> dict[str, dict] | None:
    """Per request, what the partner request carries besides identities (``None``: nothing)."""
    if right not in ("rectification", "objection") or not rt.staging(batch_id).exists(DETAILS_FILE):
        return None
    staged = rt.staging(batch_id).get_json(DETAILS_FILE)
    return {rid: per[system_key] for rid, per in staged.items() if system_key in per}


def corrected_subjects(
    rt: Runtime, batch_id: str, system_key: str, subjects: list[ResolvedSubject]
) -> list[ResolvedSubject]:
    """The subjects as the partner holds them once it applied the corrections it was sent: a
    corrected email or phone replaces the old ones (the read that checks the claim uses these)."""
    from dataclasses import replace

    details = _details(rt, batch_id, "rectification", system_key) or {}
    found = []
    for subject in subjects:
        sent = (details.get(subject.request_id) or {}).get("corrections") or {}
        found.append(
            replace(
                subject,
                emails={sent["email"]} if "email" in sent else set(subject.emails),
                phones={sent["phone"]} if "phone" in sent else set(subject.phones),
            )
        )
    return found


def summarize(statuses: dict[str, str]) -> str:
    """One state for several partner requests: failed wins, then pending, else completed."""
    values = set(statuses.values())
    if FAILED in values:
        return FAILED
    return COMPLETED if values == {COMPLETED} else "pending"


def wait_briefly(rt: Runtime, system_key: str, refs: dict[str, list[str]], state: str, seconds: float) -> str:
    """Poll for up to ``seconds`` before the caller defers: partners that answer within
    moments (drop boxes polled every few hundred ms) then cost no deferral round trip. The
    pauses start at the connector's ``first_poll_seconds`` and double up to a second: a drop
    box's answer is usually there within half a second, and each second waited is on the
    request's path. One connector (and its connections) serves every poll of the wait."""
    if state != "pending" or seconds <= 0:
        return state
    deadline = time.monotonic() + seconds
    connector = rt.connector(system_key)
    pause = connector.first_poll_seconds
    try:
        while state == "pending" and time.monotonic() < deadline:
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(1.0, pause * 2)
            state = with_backoff(lambda: summarize(connector.poll(flat(refs))), f"poll {system_key}")
    finally:
        connector.close()
    return state


def collect(rt: Runtime, batch_id: str, system_key: str, refs: dict[str, list[str]]) -> dict:
    """Fetch the completed answer (one for the whole batch), stage it and mark the partner
    completed for each request it answered for."""
    connector = rt.connector(system_key, batch_id)
    result = with_backoff(lambda: connector.fetch(refs), f"fetch from {system_key}")
    members = _requests(rt, batch_id, system_key)
    outcome = stage_result(
        rt, batch_id, system_key, result, members, evidence=lambda rid: {"partner_refs": {rid: refs.get(rid, [])}}
    )
    resume(rt, members)
    return outcome


def resume(rt: Runtime, request_ids: list[str]) -> int:
    """A partner answered: its requests waiting on partners go back to ``in_progress``, except
    those another partner still keeps ``waiting`` (a request's status follows all its systems, not
    the last one to answer). Read and written under the ledger's write lock, so a partner task
    marking its request waiting meanwhile is not overwritten; a request in any other status
    (closed, failed, verifying) is left alone. Returns how many were resumed."""
    ids = list(request_ids)
    with rt.ledger.batch():
        requests = rt.ledger.get_requests(ids)
        rows = rt.ledger.system_results_of(ids)
        ready = [
            rid
            for rid in ids
            if rid in requests
            and requests[rid].status == "waiting_on_partner"
            and not any(r.status == "waiting" for r in rows.get(rid, []))
        ]
        for rid in ready:
            rt.ledger.set_status(rid, "in_progress")
    return len(ready)


def fail(rt: Runtime, batch_id: str, system_key: str, reason: str, right: str = "access") -> None:
    for request_id in _requests(rt, batch_id, system_key):
        rt.ledger.upsert_system_result(
            request_id, system_key, action_of(right), "failed", outcome=clean(rt, batch_id, reason)
        )


def not_answering(rt: Runtime, batch_id: str, system_key: str, reason: str, right: str = "access") -> None:
    """The partner failed transiently: visible as waiting, with the reason, until a retry works."""
    for request_id in _requests(rt, batch_id, system_key):
        rt.ledger.upsert_system_result(
            request_id, system_key, action_of(right), "waiting", outcome=clean(rt, batch_id, reason)
        )
        rt.ledger.set_status(request_id, "waiting_on_partner")


#: What a partner's confirmation means, per right: erasure is then checked by reading back.
CONFIRMED = {
    "erasure": ("waiting", "partner confirmed the erasure; checking its claim"),
    "restriction": ("completed", "partner confirmed it restricted the processing"),
    "restriction_lift": ("completed", "partner confirmed it lifted the restriction"),
    "rectification": ("waiting", "partner confirmed the correction; checking its claim"),
    "objection": ("completed", "partner confirmed it stopped the processing objected to"),
}


def confirm(rt: Runtime, batch_id: str, system_key: str, refs: dict[str, list[str]], right: str) -> dict:
    """The partner says it did what was asked: record per request what it counted (its
    ``affected`` per table). An erasure's row stays waiting until :func:`verify_erasure`."""
    connector = rt.connector(system_key, batch_id)
    affected: dict[str, dict[str, int]] = {}
    try:
        answers = with_backoff(lambda: connector.answers(flat(refs)), f"read {system_key}")
    finally:
        connector.close()
    for request_id, mine in refs.items():
        counts = affected.setdefault(request_id, {})
        for ref in mine:
            for table, count in (answers[ref].get("affected") or {}).items():
                counts[table] = counts.get(table, 0) + int(count or 0)
    status, outcome = CONFIRMED[right]
    rt.ledger.upsert_system_results(
        [
            SystemUpdate(
                request_id,
                system_key,
                action_of(right),
                status,
                record_count=sum(counts.values()),
                outcome=outcome,
                evidence={"partner_refs": {request_id: refs[request_id]}, "affected": counts},
            )
            for request_id, counts in affected.items()
        ]
    )
    if status == "completed":
        resume(rt, list(refs))
    return {"affected": sum(sum(c.values()) for c in affected.values())}


def request_type(right: str, action: str | None = None) -> str:
    """The OpenDSR request type a right sends partners (a restriction's lift is its own type)."""
    return "restriction_lift" if right == "restriction" and action == "lift" else right


def verify_erasure(rt: Runtime, batch_id: str, system_key: str, refs: dict[str, list[str]]) -> dict:
    """Read back what the partner still holds of each subject after it said it erased.

    Rows left in a collection the partner must not keep (no legal hold in the data map) mean
    the claim is false: that request's partner row fails with the reason and the request stays
    open. Rows in held collections (the partner's own accounting duties) are allowed.
    """
    from include.dsr.connectors.base import REQUEST_ID_COLUMN

    connector = rt.connector(system_key, batch_id)
    try:
        result = with_backoff(lambda: connector.fetch(refs), f"read {system_key}")
    finally:
        connector.close()
    system = rt.data_map.system(system_key)
    held = {c.name for c in system.collections if c.retention and c.retention.legal_hold}
    subjects = {s.request_id: s for s in rt.staging(batch_id).get_subjects()}
    by_request = {  # collection -> request id -> the rows read back for it (one pass per frame)
        name: dict(tuple(frame.groupby(REQUEST_ID_COLUMN)))
        for name, frame in result.frames.items()
        if frame is not None and len(frame)
    }
    reasons: list[str] = []
    stored = rt.ledger.system_results_of(list(refs))
    updates = []
    for request_id in refs:
        frames = {name: rows[request_id] for name, rows in by_request.items() if request_id in rows}
        row = next(r for r in stored[request_id] if r.system == system_key and r.action == "erase")
        update = _check_claim(system, request_id, refs[request_id], frames, subjects, held, row.evidence)
        updates.append(update)
        if update.status == "failed":
            reasons.append(f"{request_id}: {update.outcome}")
    rt.ledger.upsert_system_results(updates)  # a wave's thousands of partner rows in one transaction
    return {"verified": not reasons, "reason": "; ".join(reasons)}


def _check_claim(
    system, request_id: str, refs: list[str], frames: dict, subjects, held: set[str], evidence: dict
) -> SystemUpdate:
    """One request's read-back: its partner row completed, or failed with the reason."""
    from include.dsr.checks.results import belongs_to_subject

    left, kept, foreign = {}, {}, 0
    for coll in system.collections:
        frame = frames.get(coll.name)
        if frame is None:
            continue
        mine = belongs_to_subject(frame, coll, subjects)
        foreign += int((~mine).sum())  # rows of someone else: the partner's answer is not to be trusted
        if int(mine.sum()):
            (kept if coll.name in held else left)[coll.name] = int(mine.sum())
    evidence = {
        **evidence,
        "verified_with": refs,
        "still_held_lawfully": kept,
        "left_behind": left,
        "rows_of_someone_else": foreign,
    }
    if left or foreign:
        reason = (
            f"partner {system.key} claims it erased but still holds "
            f"{sum(left.values())} rows in {', '.join(sorted(left))}"
            if left
            else f"partner {system.key} answered the check of its erasure with {foreign} rows of another subject"
        )
        return SystemUpdate(request_id, system.key, "erase", "failed", outcome=reason, evidence=evidence)
    outcome = "erased, checked by reading back" + (
        f"; kept under its legal hold: {', '.join(sorted(kept))}" if kept else ""
    )
    return SystemUpdate(request_id, system.key, "erase", "completed", outcome=outcome, evidence=evidence)


def failure_reasons(rt: Runtime, system_key: str, refs: dict[str, list[str]]) -> str:
    """Why a partner's answers failed, in its own words (redacted), for the ledger."""
    connector = rt.connector(system_key)
    try:
        statuses = connector.poll(flat(refs))
        return "; ".join(connector.failure(ref) for ref, status in statuses.items() if status == FAILED)
    except TransientError:
        return "the partner's reason could not be read"
    finally:
        connector.close()


def clean(rt: Runtime, request_id: str, text: str, limit: int = 500) -> str:
    """Text bound for the ledger about a partner exchange: the subject's identities (every form
    known) and account names, and anything email- or phone-like removed, cut to ``limit`` characters."""
    identities: list[str] = []
    try:
        for subject in rt.staging(request_id).get_subjects():
            identities += [*subject.emails, *subject.phones, *(p.lstrip("+") for p in subject.phones), *subject.names]
        if rt.staging(request_id).exists(DETAILS_FILE):  # corrected values a partner may quote back
            for per_partner in rt.staging(request_id).get_json(DETAILS_FILE).values():
                for sent in per_partner.values():
                    identities += [str(v) for v in (sent.get("corrections") or {}).values()]
    except Exception as exc:  # no staged subject (yet): the generic patterns still apply
        log.debug("no staged subject to redact with for request %s (%s)", request_id, type(exc).__name__)
    return redact(text, identities, limit=limit)
