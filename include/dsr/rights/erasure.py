"""The steps of an erasure (Art. 17) after intake, as plain functions of a ``Runtime`` and a batch.

A batch is one request (its id is the batch id) or a wave of them; every step works on the
whole batch with the same code, set-based, and keeps each request's own ledger rows.

plan -> platform DB (one transaction: changes and suppression entries) + registry of held rows ->
object store (every version) and the product's own copies -> partners (their channels, checked
by reading back where the protocol allows) -> checks -> close (notice with what was kept, why
and until when). Every step is idempotent: a failed one is resumed by running it again, and
a request already closed is left alone.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from include.dsr.core.errors import CheckFailedError, TerminalError
from include.dsr.ledger.api import SystemUpdate
from include.dsr.rights.batches import open_subjects
from include.dsr.rights.erasure_plan import OBJECTS, PLATFORM, ErasurePlan, ErasurePlanner
from include.dsr.rights.gathering import fan_out_targets, unit_name

if TYPE_CHECKING:
    from include.dsr.identity.resolver import ResolvedSubject
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)

ERASE = "erase"
OWN_COPIES = "fabconnect_exports"  # ledger name of the product's own copies (packages, staging)
PLAN_FILE = "erasure_plan.json"
PACKAGE_RIGHTS = ("access", "portability")
#: Requests whose platform changes commit together (one transaction per chunk).
PLATFORM_CHUNK = 500
#: Requests closed (notice sent, ledger closed) per ledger transaction.
CLOSE_CHUNK = 100


def _now() -> datetime:
    return datetime.now(UTC)


def earlier_requests_of(rt: Runtime, subjects: list[ResolvedSubject]) -> dict[str, list[str]]:
    """Per subject, the same person's earlier access / portability requests (their packages go too),
    found by keyed identities in the registry, never by values."""
    sharing = rt.registry.requests_sharing_many({s.request_id: s.keys(rt.hash_secret) for s in subjects})
    rows = rt.ledger.get_requests(sorted({rid for others in sharing.values() for rid in others}))
    return {
        rid: [o for o in others if (row := rows.get(o)) is not None and row.right in PACKAGE_RIGHTS]
        for rid, others in sharing.items()
    }


def build_plan(rt: Runtime, subjects: list[ResolvedSubject], batch_id: str) -> ErasurePlan:
    """The plan of ``subjects`` (reads only)."""
    planner = ErasurePlanner(
        rt.data_map, rt.connector(PLATFORM), rt.connector(OBJECTS, batch_id), earlier_requests_of(rt, subjects)
    )
    return planner.plan(subjects)


def plan_erasure(rt: Runtime, batch_id: str) -> dict:
    """Plan the batch, stage the plan and record it per request before anything is touched.

    :returns: the partner targets to tell (system, channel) and counts, no personal data
    """
    subjects = open_subjects(rt, batch_id)
    if not subjects:
        return {"requests": 0, "partners": [], "manual": []}
    staging = rt.staging(batch_id)
    if staging.exists(PLAN_FILE):  # a re-run: the plan made before anything was touched stands
        plan = _plan(rt, batch_id)
        log.info("batch %s: resuming the erasure planned at %s", batch_id, plan.created_at)
    else:
        plan = build_plan(rt, subjects, batch_id)
        staging.put_json(PLAN_FILE, plan.to_json())
    recipients: set[str] = set().union(*(s.recipients for s in subjects))
    targets = fan_out_targets(rt, "erasure", recipients)
    partners = [t for t in targets["gather"] if t.get("channel")]
    existing = _erase_rows(rt, [s.request_id for s in subjects])
    events, pending = [], []
    for subject in subjects:
        rid = subject.request_id
        events.append((rid, "erasure.planned", plan.summary(rid), f"{rid}:erasure.planned"))
        units = [PLATFORM, OBJECTS, OWN_COPIES]
        units += [unit_name(t) for t in [*partners, *targets["manual"]] if t["system"] in subject.recipients]
        pending += [SystemUpdate(rid, unit, ERASE, "pending") for unit in units if unit not in existing[rid]]
    with rt.ledger.batch():
        rt.ledger.append_events(events)
        rt.ledger.upsert_system_results(pending)
    rt.staging(batch_id).put_json("manual_targets.json", targets["manual"])
    log.info(
        "batch %s: erasure planned for %s requests, %s partners, %s manual partners",
        batch_id,
        len(subjects),
        len(partners),
        len(targets["manual"]),
    )
    return {"requests": len(subjects), "partners": partners, "manual": targets["manual"]}


def _erase_rows(rt: Runtime, request_ids: list[str]) -> dict[str, dict[str, str]]:
    """Request id -> system -> status of its erase rows (one query per thousand requests)."""
    return {
        rid: {r.system: r.status for r in rows if r.action == ERASE}
        for rid, rows in rt.ledger.system_results_of(request_ids).items()
    }


def _done(rt: Runtime, request_ids: list[str], system: str) -> set[str]:
    """The requests whose ``system`` row says the erasure there completed (a re-run skips them)."""
    return {rid for rid, rows in _erase_rows(rt, request_ids).items() if rows.get(system) == "completed"}


def _plan(rt: Runtime, batch_id: str) -> ErasurePlan:
    try:
        return ErasurePlan.from_json(rt.staging(batch_id).get_json(PLAN_FILE))
    except rt.s3.exceptions.NoSuchKey:
        raise TerminalError(f"batch {batch_id}: no erasure plan is staged; run plan_erasure first") from None


def erase_platform(rt: Runtime, batch_id: str) -> dict:
    """Apply the plan to the platform DB, register the held rows and record each request's result.

    Requests go in chunks of :data:`PLATFORM_CHUNK`: each chunk's changes and suppression entries
    commit in one transaction, then its requests' ledger rows say so, which is the position a
    re-run resumes from (a chunk that committed but was not recorded is applied again, changing
    nothing: the change set is idempotent). One request is always one transaction.
    """
    plan = _plan(rt, batch_id)
    subjects = open_subjects(rt, batch_id)
    done = _done(rt, [s.request_id for s in subjects], PLATFORM)
    todo = [s for s in subjects if s.request_id not in done]
    totals = {"requests": len(todo), "rows_changed": 0, "suppression_entries_added": 0, "held_rows": 0}
    for i in range(0, len(todo), PLATFORM_CHUNK):
        chunk = todo[i : i + PLATFORM_CHUNK]
        counts = _erase_chunk(rt, plan, chunk)
        totals["rows_changed"] += sum(c["deleted"] + c["nulled"] + c["hashed"] for c in counts.values())
        totals["suppression_entries_added"] += counts.get(plan.suppression_collection or "", {}).get("added", 0)
        totals["held_rows"] += sum(len(plan.requests[s.request_id].holds) for s in chunk)
    if done:
        log.info("batch %s: %s requests were erased on the platform by an earlier run", batch_id, len(done))
    return totals


def _erase_chunk(rt: Runtime, plan: ErasurePlan, chunk: list[ResolvedSubject]) -> dict:
    from include.dsr.ledger.registry import HeldRow

    ids = [s.request_id for s in chunk]
    suppression = (plan.suppression_collection, suppression_hashes(rt, chunk)) if plan.suppression_collection else None
    counts = rt.connector(PLATFORM).apply_erasure(plan.changes(ids), rt.hash_secret, suppression)
    held = [
        HeldRow(
            rid,
            PLATFORM,
            h["collection"],
            h["row_key"],
            h["fields_kept"],
            h["basis"],
            datetime.fromisoformat(h["retain_until"]),
            "held",
        )
        for rid in ids
        for h in plan.requests[rid].holds
    ]
    rt.registry.record_held(held)
    rows = []
    for rid in ids:
        summary = plan.summary(rid)
        rows.append(
            SystemUpdate(
                rid,
                PLATFORM,
                ERASE,
                "completed",
                record_count=summary["rows_deleted"] + summary["rows_anonymised"] + summary["rows_held"],
                outcome=_platform_outcome(summary),
                evidence={
                    "collections": summary["collections"],
                    "holds": summary["holds"],
                    "suppression_entries": summary["suppression_entries"],
                },
            )
        )
    rt.ledger.upsert_system_results(rows)
    return counts


def _platform_outcome(summary: dict) -> str:
    return (
        f"{summary['rows_deleted']} rows deleted, {summary['rows_anonymised']} anonymised, "
        f"{summary['rows_held']} kept under a legal hold"
    )


def suppression_hashes(rt: Runtime, subjects: list[ResolvedSubject]) -> list[str]:
    """Keyed hashes of every email of the subjects, for the suppression list (marketing never re-adds them)."""
    from include.dsr.core.pii import keyed_hash

    return sorted({keyed_hash(email, rt.hash_secret) for s in subjects for email in s.emails})


def erase_objects(rt: Runtime, batch_id: str) -> dict:
    """Delete the subjects' objects (every version, in one pass for the batch) and the product's
    own copies of their data (packages and staging of their earlier requests)."""
    from include.dsr.connectors.object_store import delete_versions, versions_left

    plan = _plan(rt, batch_id)
    subjects = open_subjects(rt, batch_id)
    store = rt.connector(OBJECTS, batch_id)
    keys = {
        s.request_id: sorted({k for ks in plan.requests[s.request_id].objects.values() for k in ks}) for s in subjects
    }
    everything = sorted({k for ks in keys.values() for k in ks})
    versions = versions_left(store.s3, store.bucket, everything) if everything else {}
    deleted = delete_versions(store.s3, store.bucket, everything) if everything else {"objects": 0, "versions": 0}
    copies = {}
    for subject in subjects:
        copies[subject.request_id] = 0
        for earlier in plan.requests[subject.request_id].own_copies:
            for prefix in (f"{earlier}/", f"_staging/{earlier}/", f"_keys/{earlier}.txt"):
                copies[subject.request_id] += delete_versions(rt.s3, rt.exports_bucket, prefix=prefix)["versions"]
    rows = []
    for subject in subjects:
        rid, part = subject.request_id, plan.requests[subject.request_id]
        mine = sum(versions.get(k, 0) for k in keys[rid])
        rows.append(
            SystemUpdate(
                rid,
                OBJECTS,
                ERASE,
                "completed",
                record_count=len(keys[rid]),
                outcome=f"{len(keys[rid])} objects deleted ({mine} versions)",
                evidence={"objects": {c: len(v) for c, v in part.objects.items()}, "versions_deleted": mine},
            )
        )
        rows.append(
            SystemUpdate(
                rid,
                OWN_COPIES,
                ERASE,
                "completed",
                record_count=len(part.own_copies),
                outcome=f"packages of {len(part.own_copies)} earlier requests deleted",
                evidence={"earlier_requests": part.own_copies, "objects_deleted": copies[rid]},
            )
        )
    rt.ledger.upsert_system_results(rows)
    return {"objects": deleted["objects"], "versions": deleted["versions"], "own_copies": sum(copies.values())}


def check_erasure(rt: Runtime, batch_id: str) -> dict:
    """Great Expectations over what is left, for the whole batch at once: nothing but the held
    rows, stripped as planned, no object version. One report for the batch is stored as evidence,
    with each request's part; each request's ledger says whether its checks passed."""
    import json

    from include.dsr.checks.erasure import ErasureChecker

    plan = _plan(rt, batch_id)
    subjects = open_subjects(rt, batch_id)
    checker = ErasureChecker(
        rt.data_map, rt.connector(PLATFORM), rt.connector(OBJECTS, batch_id), rt.s3, rt.exports_bucket, rt.hash_secret
    )
    reports = checker.check_batch(subjects, plan) if subjects else {}
    key = f"_evidence/{batch_id}/erasure_checks.json"
    body = {"batch": batch_id, "requests": [r.to_json() for r in reports.values()]}
    rt.s3.put_object(
        Bucket=rt.exports_bucket, Key=key, Body=json.dumps(body, default=str).encode(), ContentType="application/json"
    )
    rt.ledger.append_events(
        [
            (
                report.request_id,
                "checks.passed" if report.success else "checks.failed",
                {
                    "expectations": report.expectations_run,
                    "failures": report.failure_count,
                    "report_key": key,
                    "reason": report.reason,
                },
                None,
            )
            for report in reports.values()
        ]
    )
    failures = [f"{r.request_id}: {r.reason}" for r in reports.values() if not r.success]
    if failures:
        raise CheckFailedError(
            f"batch {batch_id}: erasure checks failed for {len(failures)} requests: " + "; ".join(failures[:20])
        )
    return {"requests_checked": len(reports)}


def close_erasure(rt: Runtime, batch_id: str, run_conf: dict) -> dict:
    """Close every request of the batch whose recipients all confirmed; tell each subject what was kept.

    A request one of whose partners has not confirmed (or claimed it erased and did not) stays
    open with that reason: :class:`TerminalError` names them after the others are closed. Once
    every request of a wave is closed, its file (identities) is deleted with the staging.
    Notices go over one mail connection; each chunk of :data:`CLOSE_CHUNK` requests commits its
    notices' and closes' ledger rows together (after a crash, at most that chunk's notices are
    sent again).

    :param run_conf: the run's conf: one request's, or a wave's (its file gives each request's)
    """
    from include.dsr.core.request import is_wave
    from include.dsr.rights import intake, waves

    wave = is_wave(run_conf)
    confs = waves.confs(rt, run_conf, "erasure") if wave else {batch_id: run_conf}
    plan = _plan(rt, batch_id)
    waiting: dict[str, list[str]] = {}
    closing = []
    subjects = open_subjects(rt, batch_id)
    ids = [s.request_id for s in subjects]
    events, rows = rt.ledger.events_of(ids), rt.ledger.system_results_of(ids)
    for subject in subjects:
        rid = subject.request_id
        verdict = _verdict(rt, plan, rid, events[rid], rows[rid])
        if "waiting" in verdict:
            waiting[subject.request_id] = verdict["waiting"]
        else:
            closing.append((subject, verdict))
    with rt.ledger.batch():
        for rid, systems in waiting.items():
            rt.ledger.set_status(rid, "waiting_on_partner", outcome_summary="not closed: " + "; ".join(systems))
    notices = intake.notices(rt)
    with notices.sending():
        for i in range(0, len(closing), CLOSE_CHUNK):
            part = closing[i : i + CLOSE_CHUNK]
            with rt.ledger.batch(), notices.recorded_together([subject.request_id for subject, _ in part]):
                for subject, verdict in part:
                    _close_one(rt, notices, plan, subject, verdict, confs.get(subject.request_id, {}))
    if not waiting:
        rt.staging(batch_id).clear()  # the resolved identities go with the last open request
        if wave:
            waves.delete_file(rt, run_conf, "erasure")
    rt.ledger.verify_chain_or_raise()
    if waiting:
        raise TerminalError(
            f"{len(waiting)} requests stay open until their recipients confirm: "
            + "; ".join(f"{rid}: {', '.join(systems)}" for rid, systems in sorted(waiting.items())[:20])
        )
    return {"closed": len(closing), "wave": wave}


def _verdict(rt: Runtime, plan: ErasurePlan, rid: str, events: list, system_rows: list) -> dict:
    """Why ``rid`` cannot close yet (``waiting``), or its outcome and the recipients that did not confirm."""
    checks = [e.event_type for e in events if e.event_type in ("checks.passed", "checks.failed")]
    if checks[-1:] != ["checks.passed"]:
        return {"waiting": ["the erasure checks have not passed"]}
    rows = [r for r in system_rows if r.action == ERASE]
    internal = (PLATFORM, OBJECTS, OWN_COPIES)
    owed = sorted(
        r.system for r in rows if r.status not in ("completed", "failed", "skipped") and r.system not in internal
    )
    false_claims = sorted(r.system for r in rows if r.status == "failed" and _is_automated(rt, r.system))
    if owed or false_claims:
        return {
            "waiting": [r.outcome or f"{r.system} has not confirmed" for r in rows if r.system in owed + false_claims]
        }
    summary = plan.summary(rid)
    exceptions = sorted(r.system for r in rows if r.status in ("failed", "skipped"))
    touched = (
        summary["rows_deleted"],
        summary["rows_anonymised"],
        summary["rows_held"],
        sum(summary["objects"].values()),
    )
    if not any(touched) and not summary["recipients"]:
        outcome, text = "no_personal_data_found", "no personal data found"
    elif exceptions:
        outcome, text = "completed_with_exceptions", f"erased; not confirmed by {', '.join(exceptions)}"
    elif summary["holds"]:
        outcome, text = "erased_with_holds", f"erased; {summary['rows_held']} rows kept under a legal hold"
    else:
        outcome, text = "erased", "erased"
    return {"outcome": outcome, "text": text, "summary": summary, "exceptions": exceptions}


def _close_one(rt: Runtime, notices, plan: ErasurePlan, subject: ResolvedSubject, verdict: dict, conf: dict) -> None:
    from include.dsr.notify.notices import answer_address

    rid = subject.request_id
    recipient = answer_address(conf, rid, subject.emails)
    if recipient:
        summary = verdict["summary"]
        notices.erasure(
            rid,
            recipient,
            summary=summary,
            held=summary["holds"],
            exceptions=[_name(rt, s) for s in verdict["exceptions"]],
            recipients=[_name(rt, s) for s in summary["recipients"]],
        )
    rt.ledger.close_request(rid, "completed", _now(), verdict["text"], outcome=verdict["outcome"])


def _is_automated(rt: Runtime, system_key: str) -> bool:
    system = rt.data_map.system(system_key.partition(".")[0])
    return system.family != "internal" and system.channel != "manual"


def _name(rt: Runtime, system_key: str) -> str:
    system = rt.data_map.system(system_key.partition(".")[0])
    return system.recipient.legal_name if system.recipient else system.name


def dry_run_plan(rt: Runtime, conf: dict) -> dict:
    """The erasure plan of a dry run: exactly what a real run would do, per system and field; nothing touched.

    For a wave, every line is validated and reported as the real run would take it, and the
    accepted ones are resolved and planned together.
    """
    import json

    from include.dsr.core.request import is_wave, parse_request
    from include.dsr.identity.resolver import IdentityResolver
    from include.dsr.rights import intake, waves

    if is_wave(conf):
        parsed = waves.load(rt, conf, "erasure")
        batch_id = parsed.wave.wave_id
        queries = [intake.subject_query(request) for _, request in parsed.requests.values()]
        report: dict = {"wave_id": batch_id, "right": "erasure", "dry_run": True, "lines": parsed.report()}
    else:
        request = parse_request(conf, "erasure")
        batch_id = request.request_id
        queries = [intake.subject_query(request)]
        report = {"request_id": batch_id, "right": "erasure", "dry_run": True}
    subjects = IdentityResolver(rt.app_engine, rt.data_map, rt.hash_secret).resolve(queries) if queries else []
    planned = [s for s in subjects if not s.conflicts]
    plan = build_plan(rt, planned, batch_id) if planned else None
    per_request = {}
    for subject in subjects:
        if subject.conflicts:
            per_request[subject.request_id] = {
                "would": "stop for ops: identities belong to different people",
                "conflicting_identity_types": sorted(subject.conflicts),
            }
        else:
            assert plan is not None
            per_request[subject.request_id] = {"would": "erase as planned", "plan": plan.summary(subject.request_id)}
    if is_wave(conf):
        report["requests"] = per_request
    elif per_request:
        report.update(per_request[batch_id])
    key = f"_dry_runs/{batch_id}/report.json"
    rt.s3.put_object(
        Bucket=rt.exports_bucket,
        Key=key,
        Body=json.dumps(report, indent=1, default=str).encode(),
        ContentType="application/json",
    )
    event = {k: v for k, v in report.items() if k not in ("requests", "lines")}
    event["requests"] = len(per_request)
    rt.ledger.append_event(None, "dry_run.reported", {**event, "report_key": key})
    return {"report_key": key, "requests": len(per_request)}
