"""The steps of a rectification (Art. 16, 19) after intake.

plan (reads only): each correction is pinned to one row of the subject's (``row_id`` where the
subject has several), checked against the row's country (postal codes) and against everyone
else's identities (a corrected email or phone that is another account's is refused: it would
merge two people), and staged with keyed hashes of the value before and after; the ledger gets
the field names and the hashes, never a value. Then the platform DB in one transaction (a row
changed by someone else since the plan is not overwritten: the run stops), the replaced
identity remembered as an alias for requests already open, every recipient that received the
field sent the correction (Art. 19), Great Expectations reads the rows back, the subject is told.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import column, or_, select, table, update

from include.dsr.core.corrections import postal_code_problem
from include.dsr.core.errors import CheckFailedError, RequestValidationError, TerminalError
from include.dsr.core.pii import keyed_hash
from include.dsr.rights import recipients
from include.dsr.rights.partner_exchange import DETAILS_FILE
from include.dsr.rights.platform_rows import ACCOUNTS, rows_of
from include.dsr.rights.recipients import record_checks, staged_subject

if TYPE_CHECKING:
    from include.dsr.identity.resolver import ResolvedSubject
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)
PLATFORM = "fabconnect_app"
PLAN_FILE = "rectification_plan.json"
RECTIFY = "rectify"
#: Account field -> the field of a partner's rectification request (``corrections``, OpenDSR 0.1
#: as Fabconnect's partners extended it); the others (job title, addresses) partners do not hold.
PARTNER_FIELDS = {"email": "email", "phone": "phone", "first_name": "name", "last_name": "name", "company": "company"}
#: The data category under which a partner stores each of those fields (for the read-back check).
PARTNER_CATEGORIES = {
    "email": "user.contact.email",
    "phone": "user.contact.phone_number",
    "name": "user.name",
    "company": "user.workplace",
}
#: Account fields whose correction changes how the subject is found (the identity graph).
IDENTITY_FIELDS = {"email": "email", "phone": "phone"}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def value_hash(rt: Runtime, name: str, value: Any) -> str | None:
    """Keyed hash of a field's value, for the ledger's before / after (None for an empty field)."""
    return None if value is None else keyed_hash(f"{name}:{value}", rt.hash_secret)


def plan_rectification(rt: Runtime, request_id: str, conf: dict) -> dict:
    """Pin, check and stage every correction; record the plan; returns the recipients to tell.

    :raises RequestValidationError: a correction cannot be carried out as given (nothing touched)
    """
    from include.dsr.core.request import parse_request

    request = parse_request(conf, "rectification")
    subject = staged_subject(rt, request_id)
    if not subject.account_ids:
        raise RequestValidationError(
            f"request {request_id} refused before anything was touched: the identities match no account, "
            "and only account data can be rectified"
        )
    system = rt.data_map.system(PLATFORM)
    problems: list[str] = []
    planned: list[dict] = []
    with rt.app_engine.connect() as conn:
        rows = {
            c.collection: rows_of(conn, system.collection(c.collection), subject.account_ids)
            for c in request.corrections
        }
    for i, correction in enumerate(request.corrections):
        mine = rows[correction.collection]
        if correction.row_id is not None and correction.row_id not in mine:
            problems.append(f"corrections[{i}].row_id: no such row of the subject in {correction.collection}")
            continue
        if correction.row_id is None and len(mine) != 1:
            problems.append(
                f"corrections[{i}] ({correction.name}): the subject has {len(mine)} rows in "
                f"{correction.collection}; give the row_id of the one to correct"
            )
            continue
        row_id = correction.row_id if correction.row_id is not None else next(iter(mine))
        row = mine[row_id]
        spec = system.collection(correction.collection).field(correction.field)
        if spec.rectify == "postal_code":
            country = next(
                (c.value for c in request.corrections if c.collection == correction.collection
                 and c.field == "country" and (c.row_id or row_id) == row_id),
                row.get("country"),
            )  # fmt: skip
            problem = postal_code_problem(correction.value, country)
            if problem:
                problems.append(f"corrections[{i}] ({correction.name}): the value {problem}")
                continue
        planned.append(
            {
                "collection": correction.collection,
                "field": correction.field,
                "row_id": row_id,
                "value": correction.value,
                "before": value_hash(rt, correction.name, row.get(correction.field)),
                "after": value_hash(rt, correction.name, correction.value),
                "old": row.get(correction.field),
            }
        )
    problems += _identity_clashes(rt, subject, planned)
    if problems:
        raise RequestValidationError(
            f"request {request_id} refused before anything was touched: " + "; ".join(problems)
        )
    full_names = _full_names(rows.get(ACCOUNTS, {}), planned)
    details = _partner_details(rt, subject, planned, full_names)
    staging = rt.staging(request_id)
    staging.put_json(PLAN_FILE, planned)
    staging.put_json(DETAILS_FILE, {request_id: details})
    rt.ledger.append_event(
        request_id,
        "rectification.planned",
        {
            "fields": [
                {
                    "field": f"{p['collection']}.{p['field']}",
                    "row": p["row_id"],
                    "before": p["before"],
                    "after": p["after"],
                }
                for p in planned
            ],
            "recipients": sorted(details),
        },
        dedupe_key=f"{request_id}:rectification.planned",
    )
    recipients.pending_once(rt, request_id, PLATFORM, RECTIFY)
    return recipients.plan(rt, request_id, "rectification", set(details))


def _identity_clashes(rt: Runtime, subject: ResolvedSubject, planned: list[dict]) -> list[str]:
    """A corrected email or phone that is already someone else's would merge two people: another
    account's (now, or before a correction of theirs: aliases), or rows that carry it with no
    account of the subject's (a chat or a support mail of someone without an account)."""
    from include.dsr.identity.resolver import ResolvedSubject, SubjectQuery
    from include.dsr.rights.intake import resolve_query

    problems = []
    for p in planned:
        kind = IDENTITY_FIELDS.get(p["field"]) if p["collection"] == ACCOUNTS else None
        if kind is None:
            continue
        # received "at the epoch": every alias of the value counts, however old
        other = resolve_query(rt, SubjectQuery("rectification-check", **{kind: p["value"]}, received_at=EPOCH))
        if other.account_ids - subject.account_ids:
            problems.append(
                f"corrections ({ACCOUNTS}.{p['field']}): the new {kind} belongs to another account; "
                "ops must look at this request (two people may share it)"
            )
            continue
        if other.account_ids:
            continue  # the subject's own already
        probe = ResolvedSubject("rectification-check", **{f"{kind}s": {p["value"]}})
        if any(rt.connector(PLATFORM).locate([probe]).values()):
            problems.append(
                f"corrections ({ACCOUNTS}.{p['field']}): records without an account of the subject's already "
                f"carry the new {kind}; ops must look at this request before they become the subject's"
            )
    return problems


def _full_names(accounts: dict[int, dict], planned: list[dict]) -> dict[int, str]:
    """Per account whose name changes, the full name as partners store it (first and last)."""
    names = {}
    for row_id, row in accounts.items():
        changed = {p["field"]: p["value"] for p in planned if p["collection"] == ACCOUNTS and p["row_id"] == row_id}
        if {"first_name", "last_name"} & set(changed):
            parts = [changed.get("first_name", row.get("first_name")), changed.get("last_name", row.get("last_name"))]
            names[row_id] = " ".join(str(p) for p in parts if p)
    return names


def _partner_details(
    rt: Runtime, subject: ResolvedSubject, planned: list[dict], full_names: dict[int, str]
) -> dict[str, dict]:
    """Per recipient holding a corrected field's data category, the ``corrections`` it is sent."""
    sent: dict[str, Any] = {}
    for p in planned:
        key = PARTNER_FIELDS.get(p["field"]) if p["collection"] == ACCOUNTS else None
        if key == "name":
            sent["name"] = full_names[p["row_id"]]
        elif key:
            sent[key] = p["value"]
    details: dict[str, dict] = {}
    for partner in rt.data_map.partners():
        if partner.key not in subject.recipients:
            continue
        held = {cat for coll in partner.collections for f in coll.fields for cat in f.data_categories}
        mine = {k: v for k, v in sent.items() if PARTNER_CATEGORIES[k] in held}
        if mine:
            details[partner.key] = {"corrections": mine}
    return details


def verify_partner(rt: Runtime, request_id: str, system_key: str, refs: dict[str, list[str]]) -> dict:
    """Read back what the partner holds under the corrected identities after it said it corrected.

    The claim is false when nothing is found any more (the partner kept the old identity), or a
    row holds another value than the correction in a field of the corrected kind (identity
    columns, and the data categories of names and companies). The partner's row fails with the
    reason and the request stays open; values never reach the reason, only column names.
    """
    from include.dsr.connectors.base import REQUEST_ID_COLUMN
    from include.dsr.ledger.api import SystemUpdate
    from include.dsr.rights.partner_exchange import with_backoff

    connector = rt.connector(system_key, request_id)
    try:
        result = with_backoff(lambda: connector.fetch(refs), f"read {system_key}")
    finally:
        connector.close()
    system = rt.data_map.system(system_key)
    sent = rt.staging(request_id).get_json(DETAILS_FILE)[request_id][system_key]["corrections"]
    claimed = next(
        (r for r in rt.ledger.system_results(request_id) if r.system == system_key and r.action == RECTIFY), None
    )
    rows, wrong = 0, set()
    for coll in system.collections:
        frame = result.frames.get(coll.name)
        if frame is None or not len(frame):
            continue
        frame = frame[frame[REQUEST_ID_COLUMN] == request_id]
        rows += len(frame)
        for f in coll.fields:
            key = {"email": "email", "phone": "phone"}.get(f.identity or "") or next(
                (k for k in ("name", "company") if PARTNER_CATEGORIES[k] in f.data_categories), None
            )
            if key not in sent or f.name not in frame.columns:
                continue
            for value in frame[f.name]:
                if value is not None and value == value and _as_sent(key, value, f) != sent[key]:
                    wrong.add(f"{coll.name}.{f.name}")
    evidence = {"verified_with": refs[request_id], "rows_read": rows, "fields_not_corrected": sorted(wrong)}
    affected = (claimed.record_count or 0) if claimed else 0
    if wrong or (affected and not rows):
        where = ", ".join(sorted(wrong))
        reason = (
            f"partner {system_key} claims it corrected the data but still holds other values in {where}"
            if wrong
            else f"partner {system_key} claims it corrected {affected} rows, and none is found under the corrected "
            "identities"
        )
        rt.ledger.upsert_system_results(
            [SystemUpdate(request_id, system_key, RECTIFY, "failed", outcome=reason, evidence=evidence)]
        )
        return {"verified": False, "reason": reason}
    rt.ledger.upsert_system_results(
        [SystemUpdate(request_id, system_key, RECTIFY, "completed", record_count=affected,
                      outcome="corrected, checked by reading back", evidence=evidence)]
    )  # fmt: skip
    return {"verified": True, "reason": ""}


def _as_sent(key: str, value: Any, spec) -> str | None:
    """A partner's stored value in the form the correction was sent in."""
    from include.dsr.core.identities import normalize_email, normalize_phone

    if key == "email":
        return normalize_email(str(value))
    if key == "phone":
        return normalize_phone(str(value), spec.phone_region)
    return " ".join(str(value).split())


def rectify_platform(rt: Runtime, request_id: str) -> dict:
    """Write every correction in one transaction, with aliases for replaced identities.

    A row whose field holds neither the planned old value nor the new one was changed by someone
    else since the plan: the transaction is rolled back and the run stops (re-plan to go on).
    """
    from include.dsr.identity import aliases

    planned = rt.staging(request_id).get_json(PLAN_FILE)
    system = rt.data_map.system(PLATFORM)
    aliases.ensure_schema(rt.app_engine)
    changed = 0
    by_row: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for p in planned:
        by_row[(p["collection"], p["row_id"])].append(p)
    with rt.app_engine.begin() as conn:
        for (collection, row_id), fields in sorted(by_row.items()):
            coll = system.collection(collection)
            t = table(collection, *(column(n) for n in coll.field_names))
            # Compare and set: each field still holds the value planned from (or already the new one,
            # a re-run); a row someone changed since is left alone and the transaction rolled back.
            unchanged = [
                or_(t.c[p["field"]].is_not_distinct_from(p["old"]), t.c[p["field"]] == p["value"]) for p in fields
            ]
            values = {p["field"]: p["value"] for p in fields}
            written = conn.execute(update(t).where(t.c[coll.primary_key] == row_id, *unchanged).values(**values))
            if written.rowcount != 1:
                raise TerminalError(
                    f"request {request_id}: row {row_id} of {collection} changed since the plan; nothing was "
                    "written (run the request again to plan afresh)"
                )
            changed += 1
            if collection == ACCOUNTS:
                for p in fields:
                    if p["field"] in IDENTITY_FIELDS and p["old"] and p["old"] != p["value"]:
                        old = _as_sent(p["field"], p["old"], system.collection(ACCOUNTS).field(p["field"]))
                        if old:
                            aliases.record(conn, request_id, row_id, IDENTITY_FIELDS[p["field"]], old, rt.hash_secret)
    rt.ledger.upsert_system_result(
        request_id,
        PLATFORM,
        RECTIFY,
        "completed",
        record_count=len(planned),
        outcome=f"{len(planned)} fields corrected in {changed} rows, one transaction",
        evidence={"fields": sorted({f"{p['collection']}.{p['field']}" for p in planned}), "rows": changed},
    )
    return {"fields": len(planned), "rows": changed}


def check_rectification(rt: Runtime, request_id: str) -> dict:
    """Great Expectations reads every corrected field back (as keyed hashes: the report holds no
    value), and a corrected email or phone must find the subject's account."""
    import pandas as pd

    from include.dsr.identity.resolver import SubjectQuery
    from include.dsr.rights.intake import resolve_query

    planned = rt.staging(request_id).get_json(PLAN_FILE)
    subject = staged_subject(rt, request_id)
    system = rt.data_map.system(PLATFORM)
    with rt.app_engine.connect() as conn:
        read = []
        for p in planned:
            coll = system.collection(p["collection"])
            t = table(coll.name, column(coll.primary_key), column(p["field"]))
            value = conn.execute(select(t.c[p["field"]]).where(t.c[coll.primary_key] == p["row_id"])).scalar_one()
            name = f"{p['collection']}.{p['field']}"
            read.append({"field": name, "corrected": value_hash(rt, name, value) == p["after"]})
    found = []
    for p in planned:
        kind = IDENTITY_FIELDS.get(p["field"]) if p["collection"] == ACCOUNTS else None
        if kind:
            again = resolve_query(rt, SubjectQuery("rectification-check", **{kind: p["value"]}))
            found.append({"identity": kind, "finds_subject": again.account_ids == {p["row_id"]} & subject.account_ids})
    frame = pd.DataFrame(
        [{"what": r["field"], "ok": r["corrected"]} for r in read]
        + [{"what": f"finds subject by {f['identity']}", "ok": f["finds_subject"]} for f in found],
        columns=["what", "ok"],
    )
    failed = record_checks(
        rt,
        request_id,
        "rectified_fields",
        frame,
        lambda E: [
            E.ExpectTableRowCountToEqual(value=len(planned) + len(found)),
            E.ExpectColumnValuesToBeInSet(column="ok", value_set=[True]),
        ],
        {"fields_checked": len(read), "identities_checked": len(found)},
    )
    if failed:
        wrong = sorted(frame.loc[~frame["ok"].astype(bool), "what"])
        raise CheckFailedError(f"request {request_id}: rectification checks failed: {', '.join(wrong) or 'row count'}")
    return {"fields_checked": len(read)}


def close_rectification(rt: Runtime, request_id: str, conf: dict) -> dict:
    """Close once every automated recipient confirmed; tell the subject which fields were corrected."""
    from include.dsr.notify.notices import answer_address
    from include.dsr.rights import intake

    planned = rt.staging(request_id).get_json(PLAN_FILE)
    labels = sorted({field_label(rt, p["collection"], p["field"]) for p in planned})

    def notify(told: list[str], exceptions: list[str]) -> None:
        recipient = answer_address(conf, request_id, staged_subject(rt, request_id).emails)
        if recipient:
            intake.notices(rt).rectification(request_id, recipient, labels, told, exceptions)

    closed = recipients.close_when_told(
        rt, request_id, "rectification", f"{len(planned)} fields corrected", "rectified", notify
    )
    return {**closed, "fields": len(planned)}


def field_label(rt: Runtime, collection: str, field: str) -> str:
    """How the subject reads a field's name: its collection's description and its own name."""
    coll = rt.data_map.system(PLATFORM).collection(collection)
    return f"{field.replace('_', ' ')} ({coll.description.lower()})"
