"""Talking to a partner about one request: submit, poll, collect, with the ledger kept current.

Partner calls that fail transiently (5xx, timeouts, resets) are retried in place with
exponential backoff before the error reaches Airflow, whose own retries come on top.
The ledger row of the partner moves pending -> waiting -> completed | failed, with the
partner references (no personal data) as evidence, so a silent partner is visible there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from include.dsr.connectors.partner import COMPLETED, FAILED
from include.dsr.core.errors import TransientError
from include.dsr.core.pii import redact
from include.dsr.rights.gathering import EXPORT, stage_result

if TYPE_CHECKING:
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


def submit(rt: Runtime, request_id: str, right: str, system_key: str) -> dict:
    """Send (or re-send) the request to the partner; returns refs and their statuses."""
    connector = rt.connector(system_key, request_id)
    subjects = rt.staging(request_id).get_subjects()
    refs = with_backoff(lambda: connector.submit(subjects, right), f"submit to {system_key}")
    statuses = with_backoff(lambda: connector.poll(flat(refs)), f"poll {system_key}")
    state = summarize(statuses)
    if state != COMPLETED:
        rt.ledger.upsert_system_result(
            request_id,
            system_key,
            EXPORT,
            "waiting",
            outcome=f"partner status: {state}",
            evidence={"partner_refs": refs},
        )
        rt.ledger.set_status(request_id, "waiting_on_partner")
    return {"refs": refs, "state": state}


def summarize(statuses: dict[str, str]) -> str:
    """One state for several partner requests: failed wins, then pending, else completed."""
    values = set(statuses.values())
    if FAILED in values:
        return FAILED
    return COMPLETED if values == {COMPLETED} else "pending"


def poll(rt: Runtime, system_key: str, refs: dict[str, list[str]]) -> str:
    connector = rt.connector(system_key)
    return summarize(connector.poll(flat(refs)))


def wait_briefly(rt: Runtime, system_key: str, refs: dict[str, list[str]], state: str, seconds: float) -> str:
    """Poll for up to ``seconds`` before the caller defers: partners that answer within
    moments (drop boxes polled every few hundred ms) then cost no deferral round trip."""
    deadline = time.monotonic() + seconds
    while state == "pending" and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        state = with_backoff(lambda: poll(rt, system_key, refs), f"poll {system_key}")
    return state


def collect(rt: Runtime, request_id: str, system_key: str, refs: dict[str, list[str]]) -> dict:
    """Fetch the completed answer, stage it and mark the partner completed."""
    connector = rt.connector(system_key, request_id)
    result = with_backoff(lambda: connector.fetch(refs), f"fetch from {system_key}")
    outcome = stage_result(rt, request_id, system_key, result, evidence={"partner_refs": refs})
    rt.ledger.set_status(request_id, "in_progress")
    return outcome


def fail(rt: Runtime, request_id: str, system_key: str, reason: str) -> None:
    rt.ledger.upsert_system_result(request_id, system_key, EXPORT, "failed", outcome=clean(rt, request_id, reason))


def not_answering(rt: Runtime, request_id: str, system_key: str, reason: str) -> None:
    """The partner failed transiently: visible as waiting, with the reason, until a retry works."""
    rt.ledger.upsert_system_result(request_id, system_key, EXPORT, "waiting", outcome=clean(rt, request_id, reason))
    rt.ledger.set_status(request_id, "waiting_on_partner")


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


def clean(rt: Runtime, request_id: str, text: str) -> str:
    """Text bound for the ledger about a partner exchange: the subject's identities (every form
    known) and anything email- or phone-like removed, cut to 500 characters."""
    identities: list[str] = []
    try:
        for subject in rt.staging(request_id).get_subjects():
            identities += [*subject.emails, *subject.phones, *(p.lstrip("+") for p in subject.phones)]
    except Exception as exc:  # no staged subject (yet): the generic patterns still apply
        log.debug("no staged subject to redact with for request %s (%s)", request_id, type(exc).__name__)
    return redact(text, identities, limit=500)
