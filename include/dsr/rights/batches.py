"""A batch is what one DAG run works on: one request (the batch id is its request id) or a wave
of them (the wave id). Every step takes the batch and works set-based on its open requests,
each keeping its own ledger rows, so a single request and a wave go through the same code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from include.dsr.identity.resolver import ResolvedSubject
    from include.dsr.rights.runtime import Runtime

#: Staged by a wave's intake: what makes a batch a wave (its id, its right), whatever the ids are.
WAVE_FILE = "wave.json"


def open_subjects(rt: Runtime, batch_id: str) -> list[ResolvedSubject]:
    """The batch's subjects whose request is still open (a closed one is never touched again);
    none once the batch's staging is cleared (a retry after the close)."""
    staging = rt.staging(batch_id)
    if not staging.exists("subjects.json"):
        return []
    subjects = staging.get_subjects()
    rows = rt.ledger.get_requests([s.request_id for s in subjects])
    return [s for s in subjects if (row := rows.get(s.request_id)) is not None and row.is_open]


def mark_wave(rt: Runtime, wave_id: str, right: str) -> None:
    rt.staging(wave_id).put_json(WAVE_FILE, {"wave_id": wave_id, "right": right})


def is_wave_batch(rt: Runtime, batch_id: str) -> bool:
    """Whether the batch is a wave (its intake staged :data:`WAVE_FILE`), not a single request."""
    return rt.staging(batch_id).exists(WAVE_FILE)


def wave_right(rt: Runtime, wave_id: str) -> str:
    return rt.staging(wave_id).get_json(WAVE_FILE)["right"]
