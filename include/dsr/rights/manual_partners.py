"""Turn the answers ops gave in the manual-partner HITL tasks into ledger facts."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from include.dsr.connectors.partner_manual import CONFIRMED, NO_DATA
from include.dsr.rights.gathering import EXPORT

if TYPE_CHECKING:
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)
HITL_TASK = "confirm_manual_partner"


def outcome_of(reply: dict | None, confirmed: tuple[str, str] = (CONFIRMED, NO_DATA)) -> tuple[str, int | None, str]:
    """(ledger status, record count, outcome text) for one HITL reply (None: no reply recorded).

    :param confirmed: the option meaning "done, with records" and the one meaning "holds no data"
    """
    if not reply:
        return "skipped", None, "no answer recorded by ops"
    choice = (reply.get("chosen_options") or [""])[0]
    count = (reply.get("params_input") or {}).get("record_count")
    if choice in confirmed:
        return "completed", int(count or 0) if choice == confirmed[0] else 0, choice
    return "failed", None, choice or "no option chosen"


def record_replies(
    rt: Runtime, request_id: str, ti: Any, action: str = EXPORT, confirmed: tuple[str, str] = (CONFIRMED, NO_DATA)
) -> list[dict]:
    """Read every mapped HITL reply (map index order = fan-out order) and record it under ``action``."""
    from include.dsr.rights.partner_exchange import recipients_of

    manual = rt.staging(request_id).get_json("manual_targets.json")
    recorded = []
    for index, target in enumerate(manual):
        reply = ti.xcom_pull(task_ids=HITL_TASK, map_indexes=index)
        status, count, text = outcome_of(reply, confirmed)
        # one answer per partner covers every request of the batch the partner received data of
        members = [s.request_id for s in recipients_of(rt, request_id, target["system"])] or [request_id]
        for member in members:
            rt.ledger.upsert_system_result(
                member, target["system"], action, status, record_count=count, outcome=f"manual channel: {text}"
            )
        recorded.append({"system": target["system"], "status": status})
    log.info("recorded %s manual partner answers for request %s", len(recorded), request_id)
    return recorded
