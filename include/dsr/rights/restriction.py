"""The steps of a restriction of processing (Art. 18) and of its lift, after intake.

apply: the subject's keys (account ids, keyed hashes of emails and phones) enter the restriction
registry in the platform DB for every purpose (only storage continues), every recipient is told
(Art. 19), Great Expectations checks the registry, the subject is told.

lift (Art. 18(3)): the subject is told *before* the restriction ends; :func:`lift_platform`
refuses to clear anything until that notice is recorded in the ledger. Then the registry rows
are stamped lifted and every recipient is told.

Access, portability and erasure of a restricted subject go on as before: they are not the
processing a restriction forbids.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from include.dsr.core.errors import CheckFailedError, TerminalError
from include.dsr.processing import restrictions
from include.dsr.rights import recipients
from include.dsr.rights.recipients import record_checks, staged_subject

if TYPE_CHECKING:
    from include.dsr.identity.resolver import ResolvedSubject
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)
PLATFORM = "fabconnect_app"
APPLY, LIFT = "apply", "lift"
LIFT_NOTICE = "restriction_lift"


def kind_of(action: str) -> str:
    """The partner request type and ledger action of the run's ``action``."""
    return "restriction_lift" if action == LIFT else "restriction"


def subject_keys(rt: Runtime, subject: ResolvedSubject) -> restrictions.SubjectKeys:
    return restrictions.SubjectKeys.of(rt.hash_secret, subject.account_ids, subject.emails, subject.phones)


def plan_restriction(rt: Runtime, request_id: str, action: str) -> dict:
    """Check the request can be carried out, and record the rows to complete; returns partner targets.

    A lift of a subject with no restriction in force is refused before anything is touched.
    """
    subject = staged_subject(rt, request_id)
    keys = subject_keys(rt, subject)
    if not keys:
        raise TerminalError(f"request {request_id}: the identities resolve to nobody; there is nothing to restrict")
    restrictions.ensure_schema(rt.app_engine)
    if action == LIFT and not restrictions.in_force(rt.app_engine, keys, restrictions.RESTRICTION):
        raise TerminalError(f"request {request_id}: no restriction is in force for this subject; nothing to lift")
    kind = kind_of(action)
    recipients.pending_once(rt, request_id, PLATFORM, recipients.action_of(kind))
    targets = recipients.plan(rt, request_id, kind)
    rt.ledger.append_event(
        request_id,
        f"{kind}.planned",
        {"accounts": len(keys.account_ids), "keys": len(keys.hashes), "recipients": len(subject.recipients)},
        dedupe_key=f"{request_id}:{kind}.planned",
    )
    return targets


def apply_platform(rt: Runtime, request_id: str) -> dict:
    """Enter the subject's keys in the registry for every purpose, in one transaction."""
    keys = subject_keys(rt, staged_subject(rt, request_id))
    with rt.app_engine.begin() as conn:
        added = restrictions.apply(conn, request_id, keys, restrictions.RESTRICTION)
    rows = restrictions.of_request(rt.app_engine, request_id)
    rt.ledger.upsert_system_result(
        request_id,
        PLATFORM,
        "restrict",
        "completed",
        record_count=len(rows),
        outcome=f"restricted for every purpose: {len(keys.account_ids)} accounts, {len(keys.hashes)} identities",
        evidence={"registry_rows": len(rows), "added_by_this_run": added},
    )
    return {"registry_rows": len(rows), "added": added}


def notify_lift(rt: Runtime, request_id: str, conf: dict) -> dict:
    """Tell the subject the restriction is about to be lifted (Art. 18(3)), recorded in the ledger."""
    from include.dsr.notify.notices import answer_address
    from include.dsr.rights import intake

    subject = staged_subject(rt, request_id)
    recipient = answer_address(conf, request_id, subject.emails)
    if recipient is None:
        raise TerminalError(
            f"request {request_id}: no address to tell the subject of the lift; a restriction is lifted only "
            "after the subject is told (Art. 18(3))"
        )
    in_force = restrictions.in_force(rt.app_engine, subject_keys(rt, subject), restrictions.RESTRICTION)
    since = min(r.applied_at for r in in_force) if in_force else None
    intake.notices(rt).restriction_lift(request_id, recipient, since)
    return {"notified": True}


def lift_platform(rt: Runtime, request_id: str) -> dict:
    """End the subject's restriction in the registry, only once the lift notice is recorded.

    :raises TerminalError: no notice of the lift has been recorded (Art. 18(3)): nothing is cleared
    """
    from include.dsr.notify.notices import NOTICE_EVENT

    if rt.ledger.event_with_key(f"{request_id}:{NOTICE_EVENT}:{LIFT_NOTICE}") is None:
        raise TerminalError(
            f"request {request_id}: the subject has not been told of the lift; Art. 18(3) requires the notice "
            "before a restriction is lifted, so nothing was cleared"
        )
    keys = subject_keys(rt, staged_subject(rt, request_id))
    with rt.app_engine.begin() as conn:
        ended = restrictions.lift(conn, keys, lifted_by=request_id)
    lifted = sum(1 for rid in ended for r in restrictions.of_request(rt.app_engine, rid) if r.lifted_by == request_id)
    rt.ledger.upsert_system_result(
        request_id,
        PLATFORM,
        "lift",
        "completed",
        record_count=lifted,
        outcome=f"restriction lifted: {lifted} registry rows of {len(ended)} restriction requests ended",
        evidence={"registry_rows_lifted": lifted, "restrictions_ended": ended},
    )
    return {"lifted": lifted}


def check_restriction(rt: Runtime, request_id: str, action: str) -> dict:
    """Great Expectations over the registry (rows, never values): after apply, every key of the
    subject is restricted for every purpose; after a lift, every row of the restrictions it ended
    is lifted and none of the subject's keys is restricted any more."""
    import pandas as pd

    keys = subject_keys(rt, staged_subject(rt, request_id))
    rows = restrictions.in_force(rt.app_engine, keys, restrictions.RESTRICTION)
    if action == APPLY:
        wanted = sorted({("account_id", str(a)) for a in keys.account_ids} | set(keys.hashes))
        found = {
            (r.key_type, str(r.account_id) if r.account_id is not None else r.key_hash)
            for r in rows
            if r.purpose == "*"
        }
        frame = pd.DataFrame({"key": [f"{k}:{v}" for k, v in wanted], "ok": [w in found for w in wanted]})
        facts = {"keys_checked": len(wanted), "restricted": int(frame["ok"].sum())}
    else:
        ended = next(r for r in rt.ledger.system_results(request_id) if r.action == "lift" and r.system == PLATFORM)
        mine = [
            r
            for rid in ended.evidence.get("restrictions_ended", [])
            for r in restrictions.of_request(rt.app_engine, rid)
        ]
        frame = pd.DataFrame({"key": [r.key_type for r in mine], "ok": [r.lifted_at is not None for r in mine]})
        frame = pd.concat([frame, pd.DataFrame({"key": [r.key_type for r in rows], "ok": [False] * len(rows)})])
        facts = {"registry_rows_checked": len(frame), "still_in_force": len(rows)}
    failed = record_checks(
        rt,
        request_id,
        "dsr_processing_restrictions",
        frame,
        lambda E: [
            E.ExpectTableRowCountToBeBetween(min_value=1),
            E.ExpectColumnValuesToBeInSet(column="ok", value_set=[True]),
        ],
        facts,
    )
    if failed:
        raise CheckFailedError(f"request {request_id}: restriction checks failed after {action}: {facts}")
    return facts


def close_restriction(rt: Runtime, request_id: str, conf: dict, action: str) -> dict:
    """Close the request once every automated recipient confirmed, and tell the subject (apply).

    The lift's notice went before the lift; its close sends nothing more.
    """
    from include.dsr.notify.notices import answer_address
    from include.dsr.rights import intake

    def notify(told: list[str], exceptions: list[str]) -> None:
        recipient = answer_address(conf, request_id, staged_subject(rt, request_id).emails)
        if recipient:
            intake.notices(rt).restriction(request_id, recipient, told, exceptions)

    if action == APPLY:
        return recipients.close_when_told(
            rt, request_id, "restriction", "processing restricted; only storage continues", "restricted", notify
        )
    return recipients.close_when_told(
        rt, request_id, "restriction_lift", "restriction lifted after the subject was told", "restriction_lifted"
    )
