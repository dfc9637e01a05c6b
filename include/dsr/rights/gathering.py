"""The steps of an access / portability request after intake, as plain functions of a ``Runtime``.

Fan out to every internal collection group and to the partners that received the
subject's data, gather, check with Great Expectations, package, close. Each step gives
the same result when re-run: ledger upserts, staging and package keys are overwritten,
events carry dedupe keys. Personal data stays in the staging area, never in XCom.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from include.dsr.core.errors import CheckFailedError
from include.dsr.core.request import parse_request
from include.dsr.rights import intake
from include.dsr.rights.runtime import collections_in_scope

if TYPE_CHECKING:
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)
EXPORT = "export"


def _now() -> datetime:
    return datetime.now(UTC)


def plan_fan_out(rt: Runtime, request_id: str, right: str) -> dict:
    """The fan-out targets of the resolved subject (no personal data), recorded as pending.

    ``gather``: internal collection groups and automated partners (one mapped task each);
    ``manual``: partners whose answer ops record in a human-in-the-loop task.
    """
    subject = rt.staging(request_id).get_subjects()[0]
    targets = fan_out_targets(rt, right, subject.recipients)
    for target in targets["gather"] + targets["manual"]:
        rt.ledger.upsert_system_result(request_id, unit_name(target), EXPORT, "pending")
    rt.staging(request_id).put_json("manual_targets.json", targets["manual"])
    log.info(
        "request %s fans out to %s units (%s partners) and %s manual partners",
        request_id,
        len(targets["gather"]),
        len([t for t in targets["gather"] if t.get("channel")]),
        len(targets["manual"]),
    )
    return targets


def fan_out_targets(rt: Runtime, right: str, recipients: set[str]) -> dict[str, list[dict]]:
    """Every internal collection group in scope, and the partners among ``recipients``."""
    internal: list[dict] = []
    partners: list[dict] = []
    manual: list[dict] = []
    for system in rt.data_map.systems:
        if not collections_in_scope(system, right):
            continue
        if system.family == "internal":
            if system.channel == "database":
                groups = {c.group or c.name for c in collections_in_scope(system, right)}
                internal += [{"system": system.key, "group": g} for g in sorted(groups)]
            else:
                internal.append({"system": system.key, "group": None})
        elif system.key in recipients:
            (manual if system.channel == "manual" else partners).append(
                {"system": system.key, "channel": system.channel}
            )
    return {"gather": internal + partners, "manual": manual}


def dry_run_report(rt: Runtime, conf: dict, right: str) -> dict:
    """What the request would do, touching nothing: counts per system, the partners that would be asked.

    Nothing is recorded as a request, no package is built, no notice and no partner request is
    sent. The report (counts and system names only) is kept at
    ``s3://<exports>/_dry_runs/<request_id>/report.json`` and noted in the ledger's event log.
    """
    request = parse_request(conf, right)
    subject = intake.resolve_query(rt, intake.subject_query(request))
    report: dict = {
        "request_id": request.request_id,
        "right": right,
        "dry_run": True,
        "generated_at": _now().isoformat(timespec="seconds"),
    }
    if subject.conflicts:
        report.update(
            would="stop for ops: identities belong to different people",
            conflicting_identity_types=sorted(subject.conflicts),
        )
    else:
        targets = fan_out_targets(rt, right, subject.recipients)
        counts: dict[str, dict[str, int]] = {}
        for system in rt.data_map.systems:
            if system.family == "internal" and collections_in_scope(system, right):
                located = rt.connector(system.key, request.request_id).locate([subject])
                scope = {c.name for c in collections_in_scope(system, right)}
                counts[system.key] = {name: n for name, n in located.items() if name in scope}
        report.update(
            would="gather, check and package",
            records=counts,
            record_count_total=sum(n for per in counts.values() for n in per.values()),
            partners_that_would_be_asked=sorted(t["system"] for t in targets["gather"] if t.get("channel")),
            manual_partners_that_would_be_asked=sorted(t["system"] for t in targets["manual"]),
            unverified_identity_types_ignored=sorted(subject.ignored),
        )
    key = f"_dry_runs/{request.request_id}/report.json"
    rt.s3.put_object(
        Bucket=rt.exports_bucket, Key=key, Body=json.dumps(report, indent=1).encode(), ContentType="application/json"
    )
    rt.ledger.append_event(None, "dry_run.reported", {**report, "report_key": key})
    log.info("request %s: dry run reported (%s)", request.request_id, report["would"])
    return {k: v for k, v in report.items() if k != "generated_at"}


def unit_name(target: dict) -> str:
    """Ledger / staging name of a fan-out target: ``payflow``, ``fabconnect_app.account``."""
    return f"{target['system']}.{target['group']}" if target.get("group") else target["system"]


def split_unit(unit: str) -> tuple[str, str | None]:
    system, _, group = unit.partition(".")
    return system, group or None


def unit_collections(rt: Runtime, unit: str, right: str) -> list:
    """The collections a unit must deliver for this right (a group's, or the whole system's)."""
    system_key, group = split_unit(unit)
    return [
        c
        for c in collections_in_scope(rt.data_map.system(system_key), right)
        if group is None or (c.group or c.name) == group
    ]


def gather_internal(rt: Runtime, request_id: str, right: str, target: dict) -> dict:
    """Export one internal collection group (or the object store) for the subject and stage it."""
    unit = unit_name(target)
    subjects = rt.staging(request_id).get_subjects()
    result = rt.connector(target["system"], request_id).export(subjects, unit_collections(rt, unit, right))
    return stage_result(rt, request_id, unit, result)


def stage_result(rt: Runtime, request_id: str, unit: str, result, evidence: dict | None = None) -> dict:
    """Stage a connector result and record its counts in the ledger."""
    meta = rt.staging(request_id).put_result(result, unit=unit)
    total = sum(meta["counts"].values())
    rt.ledger.upsert_system_result(
        request_id,
        unit,
        EXPORT,
        "completed",
        record_count=total,
        evidence={"counts": meta["counts"], **(evidence or {})},
    )
    return {"unit": unit, "records": total}


def validate_results(rt: Runtime, request_id: str, right: str) -> dict:
    """Great Expectations over every staged unit; fails with a readable reason."""
    from include.dsr.checks.results import ResultChecker

    staging = rt.staging(request_id)
    subjects = staging.get_subjects()
    checker = ResultChecker()
    staged = set(staging.units())
    failures, checked = [], 0
    for row in rt.ledger.system_results(request_id):
        if row.action != EXPORT or row.status == "skipped":
            continue
        system = rt.data_map.system(split_unit(row.system)[0])
        if system.channel == "manual":
            continue  # ops recorded the partner's answer; there are no rows to check
        if row.system not in staged:
            failures.append(f"{row.system}: no result staged (status {row.status})")
            continue
        expected = unit_collections(rt, row.system, right)
        report = checker.check(
            system,
            staging.load(row.system),
            subjects,
            expected,
            object_store=system.channel == "object_store",
        )
        staging.put_json(f"checks/{row.system}.json", report.to_json())
        checked += 1
        if not report.success:
            failures.append(report.reason)
    outcome = {"units_checked": checked, "failures": failures}
    rt.ledger.append_event(request_id, "checks.failed" if failures else "checks.passed", outcome)
    if failures:
        raise CheckFailedError(f"request {request_id}: result checks failed: " + "; ".join(failures))
    return {"request_id": request_id, "units_checked": checked}


def build_package(rt: Runtime, request_id: str, right: str, transmit_to: str | None = None) -> dict:
    """Write the package under ``<request_id>/``, record it in the ledger, transmit if asked."""
    from include import settings
    from include.dsr.package.build import build_package as write_package

    row = rt.ledger.get_request(request_id)
    info = {
        "request_id": request_id,
        "received_at": row.received_at.isoformat(),
        "due_at": row.due_at.isoformat(),
        "jurisdiction": row.jurisdiction,
    }
    password = _zip_password(rt, request_id) if settings.encrypt_packages() else None
    package = write_package(
        rt.s3,
        rt.exports_bucket,
        request_id,
        right,
        rt.data_map,
        info,
        settings.PACKAGE_LINK_SECONDS,
        zip_password=password,
    )
    # The presigned link lives in the request row (replaced on a re-run), not in the append-only
    # event log: it opens the package for up to 7 days.
    rt.ledger.set_package(request_id, package.url, package.expires_at)
    payload = {
        "location": f"s3://{rt.exports_bucket}/{package.prefix}",
        "files": len(package.keys),
        "manifest_sha256": package.manifest_sha256,
        "expires_at": package.expires_at.isoformat(),
        "records": sum(package.counts.values()),
    }
    if transmit_to:
        from include.dsr.package.transmit import transmit_package

        receipt = transmit_package(transmit_to, package.transmit_body(rt.s3, rt.exports_bucket))
        payload["transmitted"] = {k: v for k, v in receipt.items() if k != "url"}
    rt.ledger.append_event(
        request_id, "package.created", payload, dedupe_key=f"{request_id}:package:{package.manifest_sha256}"
    )
    return {"request_id": request_id, "package_prefix": package.prefix, "records": payload["records"]}


def _zip_password(rt: Runtime, request_id: str) -> str:
    """One random password per request, kept beside the exports (never logged, never in XCom);
    re-runs reuse it so a link already sent keeps matching its password."""
    import secrets

    key = f"_keys/{request_id}.txt"
    try:
        return rt.s3.get_object(Bucket=rt.exports_bucket, Key=key)["Body"].read().decode()
    except rt.s3.exceptions.NoSuchKey:
        password = secrets.token_urlsafe(18)
        rt.s3.put_object(Bucket=rt.exports_bucket, Key=key, Body=password.encode())
        return password


def close_request(rt: Runtime, request_id: str, conf: dict | None = None) -> dict:
    """Close the request with its outcome, send the completion notice, clear staging, verify the chain.

    Outcomes: ``no_personal_data_found`` (nothing in any system: a valid Art. 15 answer),
    ``completed_with_exceptions`` (a manual partner refused or did not answer: the subject is
    told which), else ``data_provided``.
    """
    from include.dsr.notify.notices import answer_address

    results = [r for r in rt.ledger.system_results(request_id) if r.action == EXPORT]
    total = sum(r.record_count or 0 for r in results)
    exceptions = sorted(r.system for r in results if r.status in ("failed", "skipped"))
    if exceptions:
        outcome = "completed_with_exceptions"
        summary = f"{total} records delivered; not confirmed by {', '.join(exceptions)}"
    elif total == 0:
        outcome, summary = "no_personal_data_found", "no personal data found"
    else:
        outcome, summary = "data_provided", f"{total} records delivered"
    staged = rt.staging(request_id).get_subjects() if rt.staging(request_id).exists("subjects.json") else []
    recipient = answer_address(conf or {}, request_id, {e for s in staged for e in s.emails})
    if recipient:
        intake.notices(rt).completion(
            request_id,
            recipient,
            package_url=rt.ledger.get_request(request_id).package_uri,
            outcome=outcome,
            exceptions=[_recipient_name(rt, key) for key in exceptions],
        )
    rt.ledger.close_request(request_id, "completed", _now(), summary, outcome=outcome)
    cleared = rt.staging(request_id).clear()
    report = rt.ledger.verify_chain_or_raise()
    log.info(
        "request %s closed (%s): %s records, %s staging objects removed, chain verified to seq %s",
        request_id,
        outcome,
        total,
        cleared,
        report.last_seq,
    )
    return {"request_id": request_id, "records": total, "outcome": outcome, "chain_head": report.last_hash}


def _recipient_name(rt: Runtime, system_key: str) -> str:
    system = rt.data_map.system(split_unit(system_key)[0])
    return system.recipient.legal_name if system.recipient else system.name
