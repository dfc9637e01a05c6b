"""The regulator-ready evidence bundle of one request (GDPR Art. 5(2), 24; shared GDPR.md "Evidence").

:func:`build_evidence` gathers from the ledger: the request's facts, the deadlines (recorded
and recomputed), identity verification, pauses, the extension and its reason, actions per
system, exceptions with their legal basis, Art. 19 notices, notices to the subject, the
response, and this request's slice of the hash-chained event log with every hash re-checked
plus the verification of the whole chain. :func:`write_bundle` writes it as
``evidence-<request_id>.json`` and a human-readable ``evidence-<request_id>.md``.

Facts, not payloads: the ledger holds no personal data and nothing is added here. The
subject's fingerprint and the presigned package link are left out on purpose.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.dsr.ledger.chain import event_hash
from include.dsr.ledger.schema import UnknownRequestError
from include.dsr.sla import deadlines as sla
from include.dsr.sla import rules as sla_rules

if TYPE_CHECKING:
    from include.dsr.ledger.api import Ledger
    from include.dsr.ledger.schema import EventRow, RequestRow, SystemResultRow

log = logging.getLogger(__name__)

FORMAT = "fabconnect-dsr-evidence/1"
# Override to read other event types (prefix match) as pauses, exceptions and notices.
EXCEPTION_EVENTS = ("exception.", "retention.", "erasure.retained")
ART19_EVENTS = ("recipient.notified", "recipients.notified", "art19.")
SUBJECT_NOTICE_EVENTS = ("notice.", "subject.notified")
#: Evidence keys of a system row that describe an exception (data kept under a legal basis).
EXCEPTION_KEYS = ("legal_basis", "retained", "retain_until", "kept")
#: Payload keys that may hold the presigned package link (it opens the subject's data): never exported.
LINK_KEYS = ("package_uri", "url")
REDACTED_LINK = "[presigned link withheld]"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _matching(events: Iterable[EventRow], prefixes: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"seq": e.seq, "event_type": e.event_type, "at": _iso(e.created_at), **_without_links(e.payload)[0]}
        for e in events
        if e.event_type.startswith(prefixes)
    ]


def _deadlines(row: RequestRow, events: list[EventRow], now: datetime) -> dict[str, Any]:
    """Recorded deadlines, the rule's own computation, and the ones in force after pauses."""
    recomputed = sla.due_at(row.received_at, row.jurisdiction, right=row.right)
    extended = sla.due_at(row.received_at, row.jurisdiction, extended=True, right=row.right)
    first = sla_rules.first_deadline(row, events, now)
    deadline = sla_rules.effective_deadline(row, events, now)
    closed = row.closed_at
    return {
        "rule": "CCPA: opt-out of sale / sharing within 15 business days"
        if row.jurisdiction == "CCPA" and row.right == sla.CCPA_OPT_OUT_RIGHT
        else "CCPA: 45 days, +45 with notice"
        if row.jurisdiction == "CCPA"
        else "GDPR Art. 12(3): one month, +2 months with reasons and notice before the first deadline",
        "due_at": _iso(row.due_at),
        "due_at_recomputed": _iso(recomputed),
        "due_at_matches_rule": recomputed == row.due_at,
        "extended_due_at": _iso(row.extended_due_at),
        "extended_due_at_by_rule": _iso(extended),
        "acknowledge_by": _iso(sla.acknowledge_by(row.received_at, row.jurisdiction)),
        "paused_days": sla_rules.paused_days(events, now),
        "first_deadline_after_pauses": _iso(first),
        "deadline_in_force": _iso(deadline),
        "answered_within_first_deadline": None if closed is None else closed <= first,
        "answered_within_deadline_in_force": None if closed is None else closed <= deadline,
    }


def _verification(events: list[EventRow], row: RequestRow) -> dict[str, Any]:
    verified = [e for e in events if e.event_type == "identity.verified"]
    if verified:
        payload = verified[-1].payload
        return {
            "outcome": "verified",
            "method": payload.get("method"),
            "verified_at": payload.get("verified_at"),
            "confirmed_by": payload.get("confirmed_by"),
            "recorded_at": _iso(verified[-1].created_at),
        }
    outcome = "not verified" if row.status == "refused" else "not recorded yet"
    return {"outcome": outcome, "method": None, "verified_at": None, "confirmed_by": None, "recorded_at": None}


def _pauses(events: list[EventRow], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "pause_no": p.number,
            "reason": p.reason,
            "paused_at": _iso(p.paused_at),
            "resumed_at": _iso(p.resumed_at),
            "resume_reason": p.resume_reason,
            "counts": p.counts,
            "days": p.days(now),
        }
        for p in sla_rules.pauses(events)
    ]


def _extension(events: list[EventRow], row: RequestRow, now: datetime) -> dict[str, Any] | None:
    if row.extended_due_at is None:
        return None
    recorded = [e for e in events if e.event_type == "request.extended"]
    first = sla_rules.first_deadline(row, events, now)
    notice = sla_rules.extension_notice(events)
    return {
        "extended_due_at": _iso(row.extended_due_at),
        "reason": row.extension_reason,
        "recorded_at": _iso(recorded[-1].created_at) if recorded else None,
        "recorded_before_first_deadline": bool(recorded) and recorded[-1].created_at <= first,
        "notice_sent_at": _iso(notice.created_at) if notice else None,
        "valid": sla_rules.extension_is_valid(row, events, now),
    }


def _action(result: SystemResultRow) -> dict[str, Any]:
    return {
        "system": result.system,
        "action": result.action,
        "status": result.status,
        "record_count": result.record_count,
        "outcome": result.outcome,
        "at": _iso(result.updated_at),
        "attempts": result.attempts,
        "evidence": result.evidence,
    }


def _exceptions(events: list[EventRow], results: list[SystemResultRow]) -> list[dict[str, Any]]:
    found = _matching(events, EXCEPTION_EVENTS)
    for result in results:
        kept = {key: result.evidence[key] for key in EXCEPTION_KEYS if key in result.evidence}
        if kept:
            found.append({"system": result.system, "action": result.action, "at": _iso(result.updated_at), **kept})
    return found


def _art19(events: list[EventRow], results: list[SystemResultRow]) -> list[dict[str, Any]]:
    found = _matching(events, ART19_EVENTS)
    found += [
        {
            "system": r.system,
            "action": r.action,
            "status": r.status,
            "at": _iso(r.updated_at),
            "reference": r.evidence.get("reference"),
        }
        for r in results
        if r.action == "notify"
    ]
    return found


def _without_links(payload: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The payload with presigned links (a URL with a query string) replaced, and whether any was."""
    links = {k for k in LINK_KEYS if isinstance(payload.get(k), str) and "?" in payload[k]}
    return {k: REDACTED_LINK if k in links else v for k, v in payload.items()}, bool(links)


def _response(events: list[EventRow], row: RequestRow) -> dict[str, Any]:
    packages = [e.payload for e in events if e.event_type == "package.created" and "location" in e.payload]
    package = {k: v for k, v in packages[-1].items() if k not in LINK_KEYS} if packages else None
    # Recipients that refused or never answered, as the completion notice told the subject.
    completions = [e.payload for e in events if e.event_type == "notice.sent" and e.payload.get("kind") == "completion"]
    return {
        "status": row.status,
        "closed_at": _iso(row.closed_at),
        "outcome": row.outcome,
        "outcome_summary": row.outcome_summary,
        "exceptions": completions[-1].get("exceptions") or [] if completions else [],
        "package": package,
        "package_link_expires_at": _iso(row.package_url_expires_at),
    }


def _event_entry(event: EventRow) -> dict[str, Any]:
    """One chain entry. A payload holding a presigned link is exported without it; its hash is
    checked here, on the stored text, but cannot be recomputed from the bundle (``payload_json`` null)."""
    recomputed = event_hash(
        event.prev_hash, event.seq, event.request_id, event.event_type, event.payload_json, event.created_at
    )
    payload, redacted = _without_links(event.payload)
    return {
        "seq": event.seq,
        "event_type": event.event_type,
        "created_at": _iso(event.created_at),
        "payload": payload,
        "payload_json": None if redacted else event.payload_json,
        "payload_redacted": redacted,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
        "hash_ok": recomputed == event.hash,
    }


def build_evidence(ledger: Ledger, request_id: str, now: datetime | None = None) -> dict[str, Any]:
    """The evidence bundle of ``request_id`` as a JSON-ready dict.

    :param now: time of the export (default: now); an open pause is counted up to it.
    :raises UnknownRequestError: the ledger does not know the request.
    """
    now = now or datetime.now(UTC)
    row = ledger.get_request(request_id)
    if row is None:
        raise UnknownRequestError(f"request {request_id!r} is not in the ledger: check the id with `dsr list`")
    events, results = ledger.events(request_id), ledger.system_results(request_id)
    chain = ledger.verify_chain()
    slice_ = [_event_entry(e) for e in events]
    received = next((e.payload for e in events if e.event_type == "request.received"), {})
    log.info("evidence for request %s: %s events, %s system rows", request_id, len(events), len(results))
    return {
        "format": FORMAT,
        "generated_at": _iso(now),
        "request": {
            "request_id": row.request_id,
            "rights_invoked": [row.right],
            "jurisdiction": row.jurisdiction,
            "channel": received.get("channel", "not recorded"),
            "received_at": _iso(row.received_at),
            "recorded_at": _iso(row.created_at),
            "dag_run_id": row.dag_run_id,
            "status": row.status,
        },
        "deadlines": _deadlines(row, events, now),
        "verification": _verification(events, row),
        "pauses": _pauses(events, now),
        "extension": _extension(events, row, now),
        "actions": [_action(r) for r in results],
        "exceptions": _exceptions(events, results),
        "art19_notices": _art19(events, results),
        "subject_notices": _matching(events, SUBJECT_NOTICE_EVENTS),
        "response": _response(events, row),
        "events": slice_,
        "chain": {
            "ok": chain.ok,
            "events_checked": chain.checked,
            "head_seq": chain.last_seq,
            "head_hash": chain.last_hash,
            "first_broken_seq": chain.first_broken_seq,
            "reason": chain.reason,
            "request_events": len(slice_),
            "request_event_hashes_ok": all(e["hash_ok"] for e in slice_),
        },
    }


def write_bundle(bundle: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``evidence-<request_id>.json`` and ``.md`` into ``out_dir`` (created if missing)."""
    from include.dsr.evidence.report import render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"evidence-{bundle['request']['request_id']}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(bundle), encoding="utf-8")
    log.info("evidence for request %s written to %s", bundle["request"]["request_id"], out_dir)
    return json_path, md_path
