"""Callbacks of the right DAGs' Deadline Alert (see :mod:`include.dsr.orchestration.deadline_alert`).

:func:`notify_deadline_missed` is an ``AsyncCallback``: the triggerer awaits it with a
small context (``dag_run`` as the REST API shows it, ``deadline``). The blocking work
(ledger, Variable, SMTP) runs in a worker thread through :func:`asyncio.to_thread`; the
Task SDK calls made there reach the triggerer's supervisor safely from a thread.

The run's conf carries the subject's identities: only ``request_id`` is read from it,
and nothing from the context is logged. Exceptions name the request id only (the
triggerer logs the callback kwargs, without the context, when a callback fails).

This module is imported when DAG files are parsed (Airflow checks the callback path):
it stays light, everything else is imported inside the functions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.dsr.ledger.api import Ledger
    from include.dsr.notify.mail import MailTransport

log = logging.getLogger(__name__)

MISSED = "alerted"
NOT_RECORDED = "not_recorded"
CLOSED = "closed"
MOVED = "deadline_moved"


async def notify_deadline_missed(context: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
    """Deadline Alert callback: tell ops that a request's run passed its legal deadline.

    :returns: what happened (``alerted``, ``closed``, ``deadline_moved``, ``not_recorded``),
        stored by Airflow as the callback's result.
    """
    return await asyncio.to_thread(handle_deadline_missed, context or {})


def handle_deadline_missed(
    context: Mapping[str, Any],
    ledger: Ledger | None = None,
    transport: MailTransport | None = None,
    ops_address: str | None = None,
    clock: Callable[[], datetime] | None = None,
) -> str:
    """The blocking part of :func:`notify_deadline_missed` (tests call it directly).

    Sends the ``deadline_missed`` ops alert once per request and deadline, unless the
    ledger shows the request closed or its deadline moved (extension, counted pause).

    :param ledger: default: the ``dsr_ledger`` connection's ledger.
    :param transport: default: SMTP through the ``dsr_smtp`` connection.
    """
    dag_run = context.get("dag_run") or {}
    request_id = (dag_run.get("conf") or {}).get("request_id")
    run = (str(dag_run.get("dag_id")), str(dag_run.get("dag_run_id") or dag_run.get("run_id")))
    now = (clock or (lambda: datetime.now(UTC)))()
    if not request_id:
        log.warning("deadline missed for run %s of %s without a request_id; nothing to alert", run[1], run[0])
        return NOT_RECORDED
    if ledger is None:
        with _airflow_ledger() as own:
            return _alert(own, str(request_id), run, now, transport, ops_address)
    return _alert(ledger, str(request_id), run, now, transport, ops_address)


def _alert(
    ledger: Ledger,
    request_id: str,
    run: tuple[str, str],
    now: datetime,
    transport: MailTransport | None,
    ops_address: str | None,
) -> str:
    from include.dsr.notify.notices import Notices
    from include.dsr.sla import status as sla_status

    row = ledger.get_request(request_id)
    if row is None:
        log.warning("deadline missed for request %s, which the ledger does not know (refused at intake?)", request_id)
        return NOT_RECORDED
    if row.closed_at is not None:
        log.info("deadline alert for request %s: request already closed (%s)", request_id, row.status)
        return CLOSED
    deadline = sla_status.current_deadline(ledger, row, now)
    if now <= deadline:
        log.info(
            "deadline alert for request %s: deadline moved to %s (extension or pause)", request_id, deadline.isoformat()
        )
        return MOVED
    owed = sla_status.owed_partners(ledger, row.request_id)
    notices = Notices(ledger, transport=transport)
    notices.ops_alert(
        row.request_id,
        "deadline_missed",
        deadline,
        sla_status.days_left(row, now, deadline=deadline),
        owed,
        ops_address=ops_address,
        run=run,
    )
    log.warning("request %s missed its deadline; ops alerted (%s partners owe a reply)", request_id, len(owed))
    return MISSED


def _airflow_ledger() -> Ledger:
    from include import constants
    from include.dsr.connections import sqlalchemy_url
    from include.dsr.ledger.api import Ledger

    return Ledger(sqlalchemy_url(constants.CONN_LEDGER))
