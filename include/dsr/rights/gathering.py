"""The steps of an access / portability batch after intake, as plain functions of a ``Runtime``.

A batch is one request or a wave of them (:mod:`include.dsr.rights.batches`): fan out to every
internal collection group and to the partners that received the subjects' data, gather the
whole batch in one query per group and one call per partner, check each unit once with Great
Expectations, then one package, one ledger trail and one notice per request. Each step gives
the same result when re-run: ledger upserts, staging and package keys are overwritten, events
carry dedupe keys. Personal data stays in the staging area, never in XCom.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.dsr.connectors.base import REQUEST_ID_COLUMN
from include.dsr.core.errors import CheckFailedError
from include.dsr.core.request import parse_request
from include.dsr.ledger.api import RequestClose, SystemUpdate
from include.dsr.rights import intake
from include.dsr.rights.batches import is_wave_batch, open_subjects, wave_right
from include.dsr.rights.runtime import collections_in_scope

if TYPE_CHECKING:
    from include.dsr.connectors.staging import RequestSlice
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)
EXPORT = "export"
#: Staged per batch: the gather targets (the units the checks expect) and the requests whose
#: checks failed in this run (they get no package).
FAN_OUT_FILE, CHECKS_FAILED_FILE = "fan_out.json", "checks_failed.json"
#: Requests packaged or closed (notices sent, ledger closed) per ledger transaction.
CLOSE_CHUNK = 100


def _now() -> datetime:
    return datetime.now(UTC)


def plan_fan_out(rt: Runtime, batch_id: str, right: str) -> dict:
    """The fan-out targets of the batch's subjects (no personal data), recorded as pending per request.

    ``gather``: internal collection groups and the automated partners any subject's data went to
    (one mapped task each, for the whole batch); ``manual``: partners whose answer ops record in a
    human-in-the-loop task. A request is pending only at the partners that received its data.
    """
    subjects = open_subjects(rt, batch_id)
    targets = fan_out_targets(rt, right, {key for s in subjects for key in s.recipients})
    updates = [
        SystemUpdate(s.request_id, unit_name(t), EXPORT, "pending")
        for s in subjects
        for t in targets["gather"] + targets["manual"]
        if not t.get("channel") or t["system"] in s.recipients
    ]
    with rt.ledger.batch():
        rt.ledger.upsert_system_results(updates)
    staging = rt.staging(batch_id)
    staging.put_json("manual_targets.json", targets["manual"])
    staging.put_json(FAN_OUT_FILE, targets["gather"])
    log.info(
        "batch %s (%s requests) fans out to %s units (%s partners) and %s manual partners",
        batch_id,
        len(subjects),
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
    """What the request (or each request of a wave) would do, touching nothing: counts per system,
    the partners that would be asked.

    Nothing is recorded as a request, no package is built, no notice and no partner request is
    sent. The report (counts and system names only) is kept at
    ``s3://<exports>/_dry_runs/<request_id or wave id>/report.json`` and noted in the ledger's event log.
    """
    from include.dsr.core.request import is_wave

    if is_wave(conf):
        from include.dsr.rights import waves

        parsed = waves.load(rt, conf, right)
        report: dict = {
            "wave_id": parsed.wave.wave_id,
            "right": right,
            "dry_run": True,
            "lines": parsed.report(),
            "requests": [_dry_run_one(rt, request, right) for _, request in parsed.requests.values()],
        }
        report_id = parsed.wave.wave_id
    else:
        request = parse_request(conf, right)
        report, report_id = _dry_run_one(rt, request, right), request.request_id
    report["generated_at"] = _now().isoformat(timespec="seconds")
    key = f"_dry_runs/{report_id}/report.json"
    rt.s3.put_object(
        Bucket=rt.exports_bucket, Key=key, Body=json.dumps(report, indent=1).encode(), ContentType="application/json"
    )
    summary = {k: v for k, v in report.items() if k not in ("requests", "lines", "generated_at")}
    rt.ledger.append_event(None, "dry_run.reported", {**summary, "report_key": key})
    log.info("batch %s: dry run reported", report_id)
    return summary


def _dry_run_one(rt: Runtime, request, right: str) -> dict:
    subject = intake.resolve_query(rt, intake.subject_query(request))
    report: dict = {"request_id": request.request_id, "right": right, "dry_run": True}
    if subject.conflicts:
        report.update(
            would="stop for ops: identities belong to different people",
            conflicting_identity_types=sorted(subject.conflicts),
        )
        return report
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
    return report


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


def gather_internal(rt: Runtime, batch_id: str, right: str, target: dict) -> dict:
    """Export one internal collection group (or the object store) for the batch's subjects and stage it."""
    unit = unit_name(target)
    subjects = open_subjects(rt, batch_id)
    result = rt.connector(target["system"], batch_id).export(subjects, unit_collections(rt, unit, right))
    return stage_result(rt, batch_id, unit, result, [s.request_id for s in subjects])


def stage_result(
    rt: Runtime,
    batch_id: str,
    unit: str,
    result,
    request_ids: list[str],
    evidence: Callable[[str], dict] | None = None,
) -> dict:
    """Stage a connector result for the batch and record each request's counts in the ledger.

    :param request_ids: the requests the unit answers for (a partner: its recipients' only)
    :param evidence: per request, what else its ledger row keeps (a partner's refs)
    """
    rt.staging(batch_id).put_result(result, unit=unit, detail={"requests": request_ids})
    counts = counts_by_request(result, request_ids)
    with rt.ledger.batch():
        rt.ledger.upsert_system_results(
            [
                SystemUpdate(
                    rid,
                    unit,
                    EXPORT,
                    "completed",
                    record_count=sum(counts[rid].values()),
                    evidence={"counts": counts[rid], **(evidence(rid) if evidence else {})},
                )
                for rid in request_ids
            ]
        )
    return {"unit": unit, "records": sum(n for per in counts.values() for n in per.values()), "requests": len(counts)}


def counts_by_request(result, request_ids: list[str]) -> dict[str, dict[str, int]]:
    """Rows per request and collection (rows carry their request id; a lone request owns untagged rows)."""
    counts: dict[str, dict[str, int]] = {rid: {} for rid in request_ids}
    for name, frame in result.frames.items():
        if REQUEST_ID_COLUMN in frame.columns:
            tally = frame[REQUEST_ID_COLUMN].astype(str).value_counts().to_dict()
        else:
            tally = {request_ids[0]: len(frame)} if len(request_ids) == 1 else {}
        for rid in request_ids:
            counts[rid][name] = int(tally.get(rid, 0))
    return counts


def validate_results(rt: Runtime, batch_id: str, right: str) -> dict:
    """Great Expectations over every staged unit, once per unit for the whole batch.

    A single request fails with a readable reason. In a wave, a unit that fails its checks fails
    the requests it answers for (each marked failed with the reason); the others go on, and
    :func:`close_request` fails the run at the end, after closing them.
    """
    from include.dsr.checks.results import ResultChecker

    staging = rt.staging(batch_id)
    subjects = open_subjects(rt, batch_id)
    by_id = {s.request_id: s for s in subjects}
    checker = ResultChecker()
    staged = set(staging.units())
    failures: list[str] = []
    failed: dict[str, list[str]] = {}
    checked = 0
    for target in _gather_targets(rt, batch_id, right):
        unit = unit_name(target)
        system = rt.data_map.system(target["system"])
        concerned = [s.request_id for s in subjects if not target.get("channel") or system.key in s.recipients]
        if not concerned:
            continue
        if unit not in staged:
            reason = f"{unit}: no result staged"
        else:
            meta_requests = staging.meta(unit).get("requests", concerned)
            report = checker.check(
                system,
                staging.load(unit),
                [by_id[rid] for rid in meta_requests if rid in by_id],
                unit_collections(rt, unit, right),
                object_store=system.channel == "object_store",
            )
            staging.put_json(f"checks/{unit}.json", report.to_json())
            checked += 1
            if report.success:
                continue
            reason = report.reason
        failures.append(reason)
        for rid in concerned:
            failed.setdefault(rid, []).append(reason)
    outcome_of = {rid: {"units_checked": checked, "failures": failed.get(rid, [])} for rid in by_id}
    rt.ledger.append_events(
        [
            (rid, "checks.failed" if failed.get(rid) else "checks.passed", outcome, None)
            for rid, outcome in outcome_of.items()
        ]
    )
    staging.put_json(CHECKS_FAILED_FILE, sorted(failed))
    if failed and (not is_wave_batch(rt, batch_id) or len(failed) == len(by_id)):
        raise CheckFailedError(f"request {batch_id}: result checks failed: " + "; ".join(failures))
    if failed:
        from include.dsr.rights import intake

        with rt.ledger.batch():
            for rid, reasons in failed.items():
                intake.mark_failed(rt, rid, "validate_results: " + "; ".join(reasons)[:400])
        log.warning("batch %s: %s of %s requests failed their checks", batch_id, len(failed), len(by_id))
    return {"request_id": batch_id, "units_checked": checked, "requests_failed": len(failed)}


def build_package(
    rt: Runtime, batch_id: str, right: str, transmit_to: str | None = None, run_conf: dict | None = None
) -> dict:
    """Write each request's package under ``<request_id>/``, record it, transmit it if asked.

    A wave's staging is read once and sliced per request (:class:`~include.dsr.connectors.staging.StagedBatch`);
    its packages are written side by side (threads, and for a large wave forked processes: see
    :mod:`~include.dsr.rights.package_writers`) and recorded in the ledger a chunk per transaction,
    in order; each request's ``transmit_to`` comes from its line. Requests whose checks failed
    get no package.
    """
    if not is_wave_batch(rt, batch_id):
        package = write_request_package(rt, batch_id, right, rt.ledger.get_request(batch_id))
        return record_package(rt, batch_id, package, transmit(rt, package, transmit_to))
    from include.dsr.connectors.staging import StagedBatch
    from include.dsr.package.build import requests_with_keys
    from include.dsr.rights import waves
    from include.dsr.rights.package_writers import write_packages

    confs = waves.confs(rt, run_conf or {}, right)
    ids = [s.request_id for s in delivered_subjects(rt, batch_id)]
    rows = rt.ledger.get_requests(ids)
    staged = StagedBatch(rt.staging(batch_id))
    # Rows tagged for a request that is no line of the wave's file would go to no package: a
    # tagging bug or a lie to stop on, not rows to drop without a word. (Rows of a line closed by
    # an earlier run may linger in a unit this run did not gather again: those are the wave's.)
    strangers = staged.request_ids() - set(confs)
    if strangers:
        raise CheckFailedError(
            f"wave {batch_id}: staged rows are tagged with {len(strangers)} request ids that are no request "
            "of this wave; no package was built (re-run the gathers)"
        )
    rebuilt = requests_with_keys(rt.s3, rt.exports_bucket, ids)  # None: each package lists its own prefix

    def write(rid: str):
        earlier = None if rebuilt is None or rid in rebuilt else set()
        return write_request_package(rt, rid, right, rows[rid], staged.slice(rid), earlier)

    # Every package is queued at once, so later ones are written while a chunk of finished ones
    # is recorded; they come back in order.
    written = write_packages(write, ids, rt, rt.s3_maker)
    try:
        records = _record_packages(rt, ids, written.packages, confs)
    finally:
        written.close()  # after any failure (a package, the ledger, a timeout): those not started are dropped
    log.info("batch %s: %s packages built in %s processes (%s records)", batch_id, len(ids), written.processes, records)
    return {"request_id": batch_id, "packages": len(ids), "records": records}


def _record_packages(rt: Runtime, ids: list[str], packages: Iterator, confs: dict) -> int:
    """Transmit and record the packages (in ``ids`` order) a chunk per ledger transaction; the records in all."""
    records = 0
    for i in range(0, len(ids), CLOSE_CHUNK):
        chunk = ids[i : i + CLOSE_CHUNK]
        # Written and sent before the ledger's transaction opens: it never waits on the store
        # or a receiver, and a failed transmission rolls back no recorded package.
        written = [next(packages) for _ in chunk]
        sent = [
            transmit(rt, package, confs.get(rid, {}).get("transmit_to"))
            for rid, package in zip(chunk, written, strict=True)
        ]
        recorded = record_packages(rt, list(zip(chunk, written, sent, strict=True)))
        records += sum(r["records"] for r in recorded)
    return records


def write_request_package(
    rt: Runtime,
    request_id: str,
    right: str,
    row,
    staging: RequestSlice | None = None,
    earlier_keys: set[str] | None = None,
):
    """One request's package in the object store, from its own staging or its slice of a wave's
    (object store only: safe to run in threads); ``earlier_keys`` as in
    :func:`~include.dsr.package.build.build_package`."""
    from include import settings
    from include.dsr.package.build import build_package as write_package

    info = {
        "request_id": request_id,
        "received_at": row.received_at.isoformat(),
        "due_at": row.due_at.isoformat(),
        "jurisdiction": row.jurisdiction,
    }
    password = _zip_password(rt, request_id) if settings.encrypt_packages() else None
    return write_package(
        rt.s3,
        rt.exports_bucket,
        request_id,
        right,
        rt.data_map,
        info,
        settings.PACKAGE_LINK_SECONDS,
        zip_password=password,
        staging=staging,
        earlier_keys=earlier_keys,
    )


def transmit(rt: Runtime, package, transmit_to: str | None) -> dict | None:
    """Send a portability package to the receiving controller (Art. 20(2)); its receipt, or None."""
    if not transmit_to:
        return None
    from include.dsr.package.transmit import transmit_package

    receipt = transmit_package(transmit_to, package.transmit_body())
    return {k: v for k, v in receipt.items() if k != "url"}


def record_package(rt: Runtime, request_id: str, package, receipt: dict | None = None) -> dict:
    """The package in the ledger: link in the request row, ``package.created`` event (with the receipt)."""
    (recorded,) = record_packages(rt, [(request_id, package, receipt)])
    return recorded


def record_packages(rt: Runtime, packages: list[tuple[str, Any, dict | None]]) -> list[dict]:
    """:func:`record_package` for many ``(request_id, package, receipt)`` in one ledger transaction:
    the links in one update, the ``package.created`` events in one insert."""
    # The presigned link lives in the request row (replaced on a re-run), not in the append-only
    # event log: it opens the package for up to 7 days.
    events: list = []
    recorded = []
    for request_id, package, receipt in packages:
        payload = {
            "location": f"s3://{rt.exports_bucket}/{package.prefix}",
            "files": package.files,
            "manifest_sha256": package.manifest_sha256,
            "zip_sha256": package.zip_sha256,
            "zip_bytes": package.zip_size_bytes,
            "expires_at": package.expires_at.isoformat(),
            "records": sum(package.counts.values()),
        }
        if receipt is not None:
            payload["transmitted"] = receipt
        dedupe_key = f"{request_id}:package:{package.manifest_sha256}"
        events.append((request_id, "package.created", payload, dedupe_key))
        recorded.append({"request_id": request_id, "package_prefix": package.prefix, "records": payload["records"]})
    with rt.ledger.batch():
        rt.ledger.set_packages([(rid, package.url, package.expires_at) for rid, package, _ in packages])
        rt.ledger.append_events(events)
    return recorded


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


def close_request(rt: Runtime, batch_id: str, conf: dict | None = None) -> dict:
    """Close each request with its outcome and completion notice, clear staging, verify the chain.

    Outcomes: ``no_personal_data_found`` (nothing in any system: a valid Art. 15 answer),
    ``completed_with_exceptions`` (a manual partner refused or did not answer: the subject is
    told which), else ``data_provided``. A wave's notices go over one mail connection, each chunk
    of requests committing its notices' and closes' ledger rows together; requests whose checks
    failed stay failed, and the task then fails naming them (the others are closed first).
    """
    from include.dsr.core.errors import TerminalError

    wave = is_wave_batch(rt, batch_id)
    if wave:
        from include.dsr.rights import waves

        right = wave_right(rt, batch_id)
        confs = waves.confs(rt, conf or {}, right)
    else:
        confs = {batch_id: conf or {}}
    subjects = delivered_subjects(rt, batch_id) if wave else open_subjects(rt, batch_id)
    ids = [s.request_id for s in subjects]
    results, rows = rt.ledger.system_results_of(ids), rt.ledger.get_requests(ids)
    notices = intake.notices(rt)
    totals: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    with notices.sending():
        for i in range(0, len(subjects), CLOSE_CHUNK):
            part = subjects[i : i + CLOSE_CHUNK]
            with rt.ledger.batch(), notices.recorded_together([s.request_id for s in part]):
                closes = []
                for subject in part:
                    rid = subject.request_id
                    total, close = _close_one(rt, notices, subject, results[rid], rows[rid], confs.get(rid, {}))
                    totals[rid] = total
                    outcomes[close.outcome] = outcomes.get(close.outcome, 0) + 1
                    closes.append(close)
                rt.ledger.close_requests(closes)
    failed = _checks_failed(rt, batch_id) if wave else []
    if not failed:
        cleared = rt.staging(batch_id).clear()
        if wave:
            waves.delete_file(rt, conf or {}, right)
    else:
        cleared = 0
    report = rt.ledger.verify_chain_or_raise()
    log.info(
        "batch %s closed %s requests (%s): %s records, %s staging objects removed, chain verified to seq %s",
        batch_id,
        len(subjects),
        outcomes,
        sum(totals.values()),
        cleared,
        report.last_seq,
    )
    if failed:
        raise TerminalError(
            f"{len(failed)} requests of wave {batch_id} failed their checks and stay failed (the others are "
            f"closed): {', '.join(failed[:20])}"
        )
    closed = {"records": sum(totals.values()), "chain_head": report.last_hash}
    if not wave:
        (outcome,) = outcomes or {"": 0}
        return {"request_id": batch_id, "outcome": outcome, **closed}
    return {"request_id": batch_id, "closed": len(subjects), "outcomes": outcomes, **closed}


def _close_one(rt: Runtime, notices, subject, results: list, row, conf: dict) -> tuple[int, RequestClose]:
    """One request's outcome from its per-system rows and its completion notice; its records and
    its close for the ledger."""
    from include.dsr.notify.notices import answer_address

    rid = subject.request_id
    exports = [r for r in results if r.action == EXPORT]
    total = sum(r.record_count or 0 for r in exports)
    exceptions = sorted(r.system for r in exports if r.status in ("failed", "skipped"))
    if exceptions:
        outcome = "completed_with_exceptions"
        summary = f"{total} records delivered; not confirmed by {', '.join(exceptions)}"
    elif total == 0:
        outcome, summary = "no_personal_data_found", "no personal data found"
    else:
        outcome, summary = "data_provided", f"{total} records delivered"
    recipient = answer_address(conf, rid, set(subject.emails))
    if recipient:
        notices.completion(
            rid,
            recipient,
            package_url=row.package_uri,
            outcome=outcome,
            exceptions=[_recipient_name(rt, key) for key in exceptions],
        )
    return total, RequestClose(rid, "completed", _now(), summary, outcome)


def _gather_targets(rt: Runtime, batch_id: str, right: str) -> list[dict]:
    """The units the batch was fanned out to (staged by :func:`plan_fan_out`; a request planned
    before that file existed: from its ledger rows)."""
    staging = rt.staging(batch_id)
    if staging.exists(FAN_OUT_FILE):
        return staging.get_json(FAN_OUT_FILE)
    targets = []
    for row in rt.ledger.system_results(batch_id):
        system_key, group = split_unit(row.system)
        system = rt.data_map.system(system_key)
        if row.action != EXPORT or row.status == "skipped" or system.channel == "manual":
            continue
        partner = system.family != "internal"
        targets.append(
            {"system": system_key, "channel": system.channel} if partner else {"system": system_key, "group": group}
        )
    return targets


def _checks_failed(rt: Runtime, batch_id: str) -> list[str]:
    staging = rt.staging(batch_id)
    return staging.get_json(CHECKS_FAILED_FILE) if staging.exists(CHECKS_FAILED_FILE) else []


def delivered_subjects(rt: Runtime, batch_id: str) -> list:
    """The batch's open requests that passed their checks (they get a package and an answer)."""
    failed = set(_checks_failed(rt, batch_id))
    return [s for s in open_subjects(rt, batch_id) if s.request_id not in failed]


def _recipient_name(rt: Runtime, system_key: str) -> str:
    system = rt.data_map.system(split_unit(system_key)[0])
    return system.recipient.legal_name if system.recipient else system.name
