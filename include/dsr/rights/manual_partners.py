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


def outcome_of(reply: dict | None) -> tuple[str, int | None, str]:
    """(ledger status, record count, outcome text) for one HITL reply (None: no reply recorded)."""
    if not reply:
        return "skipped", None, "no answer recorded by ops"
    choice = (reply.get("chosen_options") or [""])[0]
    count = (reply.get("params_input") or {}).get("record_count")
    if choice in (CONFIRMED, NO_DATA):
        return "completed", int(count or 0) if choice == CONFIRMED else 0, choice
    return "failed", None, choice or "no option chosen"


def record_replies(rt: Runtime, request_id: str, ti: Any) -> list[dict]:
    """Read every mapped HITL reply (map index order = fan-out order) and record it."""
    manual = rt.staging(request_id).get_json("manual_targets.json")
    recorded = []
    for index, target in enumerate(manual):
        reply = ti.xcom_pull(task_ids=HITL_TASK, map_indexes=index)
        status, count, text = outcome_of(reply)
        rt.ledger.upsert_system_result(
            request_id, target["system"], EXPORT, status, record_count=count, outcome=f"manual channel: {text}"
        )
        recorded.append({"system": target["system"], "status": status})
    log.info("recorded %s manual partner answers for request %s", len(recorded), request_id)
    return recorded
