"""The steps of an objection (Art. 21) or a consent withdrawal (Art. 7(3)) after intake.

The purposes objected to are sorted by their legal basis in the data map:

* **direct marketing** (Art. 21(2), (3)): absolute and immediate. No balancing, no human step:
  consent off in the platform (the purpose's ``stops_with``), the subject's emails on the
  suppression list, the registry stops the purpose, recipients that market for us are told;
* **consent** (Art. 7(3)): withdrawn at once, as easily as it was given: the purpose's
  ``stops_with`` (a testimonial unpublished) and the registry stop it;
* **legitimate interests** (Art. 21(1)): ops weigh, in a human-in-the-loop task, whether
  compelling legitimate grounds override the subject's; upheld, the registry stops the purpose
  for the subject; not upheld, the subject is told the grounds and the right to complain.

Every stop goes through the same registry as a restriction (``include.dsr.processing``), so the
jobs that check it skip the subject from their next run on.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.dsr.core.errors import CheckFailedError, TerminalError
from include.dsr.core.request import (
    CONSENT_WITHDRAWAL,
    DIRECT_MARKETING,
    LEGITIMATE_INTEREST,
    OVERRIDE_OBJECTION,
    UPHOLD_OBJECTION,
    objection_kind,
)
from include.dsr.processing import restrictions
from include.dsr.rights import recipients
from include.dsr.rights.recipients import staged_subject

if TYPE_CHECKING:
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)
PLATFORM = "fabconnect_app"
PLAN_FILE = "objection_plan.json"
UPHOLD, OVERRIDE = UPHOLD_OBJECTION, OVERRIDE_OBJECTION  # ops' choices in ``weigh_objection``
BASIS = {DIRECT_MARKETING: restrictions.OBJECTION, CONSENT_WITHDRAWAL: restrictions.CONSENT_WITHDRAWN}


def _now() -> datetime:
    return datetime.now(UTC)


def plan_objection(rt: Runtime, request_id: str, conf: dict) -> dict:
    """Sort the purposes, stage the plan and record it; returns whether ops must weigh any
    purpose (counts and purpose keys only: no personal data)."""
    from include.dsr.core.request import parse_request

    request = parse_request(conf, "objection")
    kinds = {p: objection_kind(p) for p in request.purposes}
    plan = {
        "immediate": sorted(p for p, k in kinds.items() if k != LEGITIMATE_INTEREST),
        "weigh": sorted(p for p, k in kinds.items() if k == LEGITIMATE_INTEREST),
        "kinds": kinds,
    }
    staging = rt.staging(request_id)
    if staging.exists(PLAN_FILE):  # a re-run keeps ops' decision, if there was one
        plan = {**plan, **{k: v for k, v in staging.get_json(PLAN_FILE).items() if k == "overridden"}}
    staging.put_json(PLAN_FILE, plan)
    rt.ledger.append_event(
        request_id,
        "objection.planned",
        {k: v for k, v in plan.items() if k != "overridden"},
        dedupe_key=f"{request_id}:objection.planned",
    )
    recipients.pending_once(rt, request_id, PLATFORM, "restrict")
    restrictions.ensure_schema(rt.app_engine)
    return {"weigh": bool(plan["weigh"]), "immediate": len(plan["immediate"])}


def stopped_purposes(plan: dict) -> list[str]:
    """The purposes no longer processed: the immediate ones, and the weighed ones ops upheld."""
    overridden = plan.get("overridden") or {}
    return sorted(set(plan["immediate"]) | {p for p in plan["weigh"] if p not in overridden and "overridden" in plan})


def plan_recipients(rt: Runtime, request_id: str) -> dict:
    """Once every purpose is decided: the recipients that process a stopped purpose for Fabconnect
    (a mailing house sending our newsletter) are told, with the purposes (Art. 19, 21(3))."""
    from include.dsr.rights.partner_exchange import DETAILS_FILE

    plan = rt.staging(request_id).get_json(PLAN_FILE)
    stopped = set(stopped_purposes(plan))
    subject = staged_subject(rt, request_id)
    details = {
        s.key: {"purposes": sorted(stopped & {p for c in s.collections for p in c.purposes})}
        for s in rt.data_map.partners()
        if s.key in subject.recipients and any(set(c.purposes) & stopped for c in s.collections)
    }
    rt.staging(request_id).put_json(DETAILS_FILE, {request_id: details})
    return recipients.plan(rt, request_id, "objection", set(details))


def _stop(rt: Runtime, request_id: str, purposes: dict[str, str]) -> dict[str, int]:
    """Stop ``purposes`` (purpose -> kind) for the subject in one platform transaction."""
    from include.dsr.connectors.sql_erasure import add_suppression
    from include.dsr.rights.erasure import suppression_hashes
    from include.dsr.rights.platform_rows import set_fields
    from include.dsr.rights.restriction import subject_keys

    subject = staged_subject(rt, request_id)
    keys = subject_keys(rt, subject)
    system = rt.data_map.system(PLATFORM)
    counts = {"registry_rows": 0, "rows_changed": 0, "suppression_entries": 0}
    with rt.app_engine.begin() as conn:
        for purpose, kind in sorted(purposes.items()):
            basis = BASIS.get(kind, restrictions.OBJECTION)
            counts["registry_rows"] += restrictions.apply(conn, request_id, keys, basis, [purpose])
            for coll_name, values in rt.data_map.purposes[purpose].stops_with.items():
                counts["rows_changed"] += set_fields(conn, system.collection(coll_name), subject.account_ids, values)
            if kind == DIRECT_MARKETING:
                suppression = next(
                    (c for c in system.collections if any(f.identity == "email_hash" for f in c.fields)), None
                )
                if suppression is not None:
                    counts["suppression_entries"] += add_suppression(
                        conn, suppression, suppression_hashes(rt, [subject]), _now().replace(tzinfo=None), "objection"
                    )
    return counts


def apply_immediate(rt: Runtime, request_id: str) -> dict:
    """Stop direct marketing and withdraw consents at once (no human step)."""
    plan = rt.staging(request_id).get_json(PLAN_FILE)
    immediate = {p: plan["kinds"][p] for p in plan["immediate"]}
    counts = _stop(rt, request_id, immediate) if immediate else {"registry_rows": 0, "rows_changed": 0}
    _record_platform(rt, request_id, plan, stopped=sorted(immediate), final=not plan["weigh"], counts=counts)
    return {"stopped": len(immediate), **counts}


def _record_platform(rt: Runtime, request_id: str, plan: dict, stopped: list[str], final: bool, counts: dict) -> None:
    earlier = next(
        (r.evidence for r in rt.ledger.system_results(request_id) if r.system == PLATFORM and r.action == "restrict"),
        {},
    )
    counts = {k: counts.get(k, 0) + int(earlier.get(k, 0) or 0) for k in {*counts, *earlier} if k != "stopped"}
    rt.ledger.upsert_system_result(
        request_id,
        PLATFORM,
        "restrict",
        "completed" if final else "waiting",
        record_count=counts.get("registry_rows", 0) + counts.get("rows_changed", 0),
        outcome=(f"stopped: {', '.join(stopped)}" if stopped else "nothing stopped yet")
        + ("" if final else f"; ops weigh: {', '.join(plan['weigh'])}"),
        evidence={"stopped": stopped, **counts},
    )


def weigh_body(rt: Runtime, request_id: str) -> str:
    """What ops read in the ``weigh_objection`` task (purposes and bases; the subject's grounds
    stay in the run's conf, never in the task's record)."""
    plan = rt.staging(request_id).get_json(PLAN_FILE)
    lines = [
        f"Request {request_id} objects (Art. 21(1) GDPR) to processing on legitimate interests:",
        *(
            f"- {p}: {rt.data_map.purposes[p].description} ({rt.data_map.purposes[p].basis_detail})"
            for p in plan["weigh"]
        ),
        "",
        "The subject's grounds, if given, are in the run's conf (`grounds`). Stop the processing unless "
        "Fabconnect has compelling legitimate grounds that override the subject's interests, rights and "
        "freedoms, or needs it for legal claims. If you override, write the grounds: the subject reads them.",
    ]
    return "\n".join(lines)


def apply_decision(rt: Runtime, request_id: str, reply: dict[str, Any] | None) -> dict:
    """Carry out ops' answer for the legitimate-interest purposes; the reasons are staged for the notice."""
    plan = rt.staging(request_id).get_json(PLAN_FILE)
    if not plan["weigh"]:
        return {"weighed": 0}
    if not reply:
        raise TerminalError(f"request {request_id}: no decision recorded for the objection; nothing was applied")
    choice = (reply.get("chosen_options") or [""])[0]
    reason = str((reply.get("params_input") or {}).get("reason") or "").strip()
    if choice == OVERRIDE:
        if not reason:
            raise TerminalError(
                f"request {request_id}: overriding an objection needs the compelling grounds (Art. 21(1)); none given"
            )
        plan["overridden"] = dict.fromkeys(plan["weigh"], reason)
        counts: dict[str, int] = {}
        stopped = plan["immediate"]
    elif choice == UPHOLD:
        counts = _stop(rt, request_id, dict.fromkeys(plan["weigh"], LEGITIMATE_INTEREST))
        plan["overridden"] = {}
        stopped = plan["immediate"] + plan["weigh"]
    else:
        raise TerminalError(f"request {request_id}: unknown decision for the objection")
    rt.staging(request_id).put_json(PLAN_FILE, plan)
    rt.ledger.append_event(
        request_id,
        "objection.decided",
        {"upheld": choice == UPHOLD, "purposes": plan["weigh"], "with_reason": bool(reason)},
        dedupe_key=f"{request_id}:objection.decided",
    )
    _record_platform(rt, request_id, plan, stopped=sorted(stopped), final=True, counts=counts)
    return {"weighed": len(plan["weigh"]), "upheld": choice == UPHOLD}


def check_objection(rt: Runtime, request_id: str) -> dict:
    """Great Expectations: every purpose stopped is in the registry for every key of the subject,
    and every ``stops_with`` field holds its value on the subject's rows (flags, never values)."""
    import pandas as pd

    from include.dsr.rights.platform_rows import rows_of
    from include.dsr.rights.restriction import subject_keys

    stopped = stopped_purposes(rt.staging(request_id).get_json(PLAN_FILE))
    subject = staged_subject(rt, request_id)
    keys = subject_keys(rt, subject)
    in_force = {(r.purpose, r.key_type, r.account_id, r.key_hash) for r in restrictions.in_force(rt.app_engine, keys)}
    wanted = [(p, "account_id", a, None) for p in stopped for a in sorted(keys.account_ids)]
    wanted += [(p, kind, None, h) for p in stopped for kind, h in sorted(keys.hashes)]
    checks = [{"what": f"registry {w[0]}", "ok": w in in_force} for w in wanted]
    system = rt.data_map.system(PLATFORM)
    with rt.app_engine.connect() as conn:
        for purpose in stopped:
            for coll_name, values in rt.data_map.purposes[purpose].stops_with.items():
                for row in rows_of(conn, system.collection(coll_name), subject.account_ids).values():
                    checks += [{"what": f"{coll_name}.{name}", "ok": row[name] == v} for name, v in values.items()]
    frame = pd.DataFrame(checks, columns=["what", "ok"])
    failed = recipients.record_checks(
        rt,
        request_id,
        "objection",
        frame,
        lambda E: [
            E.ExpectTableRowCountToBeBetween(min_value=len(wanted)),
            E.ExpectColumnValuesToBeInSet(column="ok", value_set=[True]),
        ],
        {"purposes_stopped": len(stopped)},
    )
    if failed:
        wrong = sorted(set(frame.loc[~frame["ok"].astype(bool), "what"]))
        raise CheckFailedError(f"request {request_id}: objection checks failed: {', '.join(wrong) or 'row count'}")
    return {"purposes_stopped": len(stopped)}


def close_objection(rt: Runtime, request_id: str, conf: dict) -> dict:
    """Close once every recipient confirmed; tell the subject what stopped and what carries on, and why."""
    from include.dsr.notify.notices import answer_address
    from include.dsr.rights import intake

    plan = rt.staging(request_id).get_json(PLAN_FILE)
    overridden = plan.get("overridden") or {}
    stopped = stopped_purposes(plan)
    describe = {p: rt.data_map.purposes[p].description for p in plan["immediate"] + plan["weigh"]}

    def notify(told: list[str], exceptions: list[str]) -> None:
        recipient = answer_address(conf, request_id, staged_subject(rt, request_id).emails)
        if recipient:
            intake.notices(rt).objection(
                request_id,
                recipient,
                [describe[p] for p in stopped],
                {describe[p]: r for p, r in overridden.items()},
                told,
            )

    if stopped:
        text = f"stopped: {', '.join(stopped)}" + (f"; carried on: {', '.join(overridden)}" if overridden else "")
        closed = recipients.close_when_told(rt, request_id, "objection", text, "processing_stopped", notify)
    else:
        text = f"compelling legitimate grounds for {', '.join(overridden)}"
        closed = recipients.close_when_told(rt, request_id, "objection", text, "refused", notify, status="refused")
    return {**closed, "stopped": len(stopped), "overridden": len(overridden)}
