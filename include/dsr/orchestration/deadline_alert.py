"""The Deadline Alert every right DAG declares: it fires at the request's legal deadline.

:class:`RequestDueDeadline` is a custom Airflow 3 deadline reference. When the scheduler
creates a run, it evaluates the reference on the run's conf: ``received_at`` (default: the
run's ``run_after``, the time it was triggered) and ``jurisdiction`` give
:func:`include.dsr.sla.deadlines.due_at`, the same date the ledger records. The alert's interval is 0,
so the callback (:func:`include.dsr.orchestration.deadline_callbacks.notify_deadline_missed`, run by the
triggerer) fires at 23:59:59 controller time on the due day unless the run has succeeded
by then (Airflow prunes a run's deadlines when it succeeds). The callback re-reads the
ledger: an extension or pause moves the deadline after the run was created, a closed
request needs no alert.

Airflow resolves custom references through plugins: ``plugins/dsr_deadline_references.py``
registers :class:`RequestDueDeadline` (``deadline_references``); without it the scheduler
cannot create the run's deadline. This module is imported
when DAG files are parsed: it stays light (no Airflow core, no SQLAlchemy at import).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import AsyncCallback, BaseDeadlineReference, DeadlineAlert

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CALLBACK_PATH = "include.dsr.orchestration.deadline_callbacks.notify_deadline_missed"
JURISDICTIONS = ("GDPR", "CCPA")


def request_deadline(
    conf: Mapping[str, Any] | None, triggered_at: datetime | None, right: str | None = None
) -> datetime | None:
    """The request's legal deadline from a run conf, or None when the conf cannot say.

    A missing ``received_at`` means "now" (the engine's default), approximated by the
    time the run was triggered. A malformed conf gives None: ``validate_request`` refuses
    such a run before anything is recorded, so there is no deadline to watch.
    """
    from include.dsr.sla.deadlines import due_at

    conf = conf or {}
    jurisdiction = conf.get("jurisdiction") or "GDPR"
    raw = conf.get("received_at")
    try:
        received = datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else triggered_at
    except (AttributeError, ValueError):
        return None
    if received is None or jurisdiction not in JURISDICTIONS:
        return None
    if received.tzinfo is None:
        return None
    return due_at(received.astimezone(UTC), jurisdiction, right=right)


class RequestDueDeadline(BaseDeadlineReference):
    """Deadline reference: the due date of the request a DAG run fulfils (from its conf)."""

    # The scheduler passes these when it evaluates a run-level reference.
    required_kwargs = {"dag_id", "run_id"}

    def _evaluate_with(self, *, session: Session, **kwargs: Any) -> datetime | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        row = session.execute(
            select(DagRun.conf, DagRun.run_after).where(
                DagRun.dag_id == kwargs["dag_id"], DagRun.run_id == kwargs["run_id"]
            )
        ).one_or_none()
        if row is None:
            log.warning("deadline reference: no run %s of %s", kwargs["run_id"], kwargs["dag_id"])
            return None
        deadline = request_deadline(row.conf, row.run_after, str(kwargs["dag_id"]).removeprefix("dsr_"))
        if deadline is None:
            log.warning(
                "deadline reference: run %s of %s has no usable received_at; no alert",
                kwargs["run_id"],
                kwargs["dag_id"],
            )
        return deadline


def request_deadline_alert() -> DeadlineAlert:
    """The alert for a right DAG: at the request's due date, notify ops."""
    return DeadlineAlert(
        reference=RequestDueDeadline(),
        interval=timedelta(0),
        callback=AsyncCallback(CALLBACK_PATH),
        name="request_due",
    )
