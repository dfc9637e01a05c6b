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
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from include.dsr.core.errors import CheckFailedError, TerminalError
from include.dsr.processing import restrictions
from include.dsr.rights import recipients
from include.dsr.rights.recipients import staged_subject

if TYPE_CHECKING:
    from include.dsr.identity.resolver import ResolvedSubject
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)
PLATFORM = "fabconnect_app"
APPLY, LIFT = "apply", "lift"
LIFT_NOTICE = "restriction_lift"


def _now() -> datetime:
    return datetime.now(UTC)


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
    rt.ledger.upsert_system_result(request_id, PLATFORM, recipients.action_of(kind), "pending")
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
        lifted = restrictions.lift(conn, keys, lifted_by=request_id)
    rt.ledger.upsert_system_result(
        request_id,
        PLATFORM,
        "lift",
        "completed",
        record_count=lifted,
        outcome=f"restriction lifted: {lifted} registry rows ended",
        evidence={"registry_rows_lifted": lifted},
    )
    return {"lifted": lifted}


def check_restriction(rt: Runtime, request_id: str, action: str) -> dict:
    """Great Expectations over the registry: after apply, every key of the subject is restricted for
    every purpose; after a lift, none is restricted any more (rows, not values, are checked)."""
    import pandas as pd

    from include.dsr.checks.gx import GxRunner

    keys = subject_keys(rt, staged_subject(rt, request_id))
    rows = restrictions.in_force(rt.app_engine, keys, restrictions.RESTRICTION)
    wanted = {("account_id", str(a)) for a in keys.account_ids} | set(keys.hashes)
    found = {
        (r.key_type, str(r.account_id) if r.account_id is not None else r.key_hash) for r in rows if r.purpose == "*"
    }
    frame = pd.DataFrame(
        {"key": [f"{k}:{v}" for k, v in sorted(wanted)], "restricted": [w in found for w in sorted(wanted)]}
    )
    gx = GxRunner("dsr_restriction_checks")
    expected = action == APPLY
    outcomes = gx.outcomes(
        "dsr_processing_restrictions",
        frame,
        [
            gx.E.ExpectTableRowCountToEqual(value=len(wanted)),
            gx.E.ExpectColumnValuesToBeInSet(column="restricted", value_set=[expected]),
        ],
    )
    failed = [o for o in outcomes if not o.success]
    rt.ledger.append_event(
        request_id,
        "checks.failed" if failed else "checks.passed",
        {
            "expectations": len(outcomes),
            "failures": len(failed),
            "keys_checked": len(wanted),
            "restricted": sum(w in found for w in wanted),
        },
    )
    if failed:
        raise CheckFailedError(
            f"request {request_id}: restriction checks failed: "
            f"{sum(w in found for w in wanted)} of {len(wanted)} keys restricted after {action}"
        )
    return {"keys_checked": len(wanted)}


def close_restriction(rt: Runtime, request_id: str, conf: dict, action: str) -> dict:
    """Close the request once every automated recipient confirmed, and tell the subject (apply).

    The lift's notice went before the lift; its close sends nothing more.
    """
    from include.dsr.notify.notices import answer_address
    from include.dsr.rights import intake

    kind = kind_of(action)
    waiting = recipients.owed(rt, request_id, kind)
    if waiting:
        rt.ledger.set_status(request_id, "waiting_on_partner", outcome_summary="not closed: " + "; ".join(waiting))
        raise TerminalError(f"request {request_id} stays open until its recipients confirm: " + "; ".join(waiting))
    told, exceptions = recipients.told(rt, request_id, kind)
    if action == APPLY:
        recipient = answer_address(conf, request_id, staged_subject(rt, request_id).emails)
        if recipient:
            intake.notices(rt).restriction(request_id, recipient, told, exceptions)
        outcome, text = "restricted", "processing restricted; only storage continues"
    else:
        outcome, text = "restriction_lifted", "restriction lifted after the subject was told"
    if exceptions:
        outcome, text = "completed_with_exceptions", f"{text}; not confirmed by {', '.join(exceptions)}"
    rt.ledger.close_request(request_id, "completed", _now(), text, outcome=outcome)
    rt.staging(request_id).clear()
    rt.ledger.verify_chain_or_raise()
    return {"request_id": request_id, "outcome": outcome}
