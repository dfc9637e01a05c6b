"""A batch is what one DAG run works on: one request (the batch id is its request id) or a wave
of them (the wave id). Every step takes the batch and works set-based on its open requests,
each keeping its own ledger rows, so a single request and a wave go through the same code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from include.dsr.identity.resolver import ResolvedSubject
    from include.dsr.rights.runtime import Runtime


def open_subjects(rt: Runtime, batch_id: str) -> list[ResolvedSubject]:
    """The batch's subjects whose request is still open (a closed one is never touched again)."""
    subjects = rt.staging(batch_id).get_subjects()
    rows = rt.ledger.get_requests([s.request_id for s in subjects])
    return [s for s in subjects if (row := rows.get(s.request_id)) is not None and row.is_open]


def is_wave_batch(rt: Runtime, batch_id: str) -> bool:
    """A wave's id is no request of the ledger; a single request's batch id is its request id."""
    return rt.ledger.get_request(batch_id) is None
