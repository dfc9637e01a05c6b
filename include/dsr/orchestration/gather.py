"""Airflow glue for gathering: one deferrable operator mapped over every fan-out target.

``GatherOperator`` exports an internal collection group directly; for a partner it submits
the request and, if the partner has not answered, defers to ``PartnerReplyTrigger``: the
wait runs in the triggerer and holds no worker slot. The trigger's kwargs are stored in the
Airflow DB, so they carry only the system key and partner references, never identities.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from include import settings
from include.dsr.orchestration.errors import run_step

COMPLETED, FAILED, TIMEOUT, ERROR = "completed", "failed", "timeout", "error"
MAX_POLL_ERRORS = 5  # consecutive transient poll failures before the task is handed back to retries


def _poll(system_key: str, refs: dict[str, list[str]]) -> str:
    from include.dsr.connectors import connector_class
    from include.dsr.core.data_map import load_data_map
    from include.dsr.rights.partner_exchange import flat, summarize

    system = load_data_map().system(system_key)
    connector = connector_class(system.channel)(system)
    try:
        return summarize(connector.poll(flat(refs)))
    finally:
        connector.close()


class PartnerReplyTrigger(BaseTrigger):
    """Poll a partner until its answer is there, failed, or the deadline passed.

    :param system: partner system key  :param refs: our request_id -> partner request ids
    :param poll_seconds: pause between polls  :param deadline: ISO time after which we stop waiting
    :param phase: echoed in the event: which of the operator's exchanges this wait belongs to
    """

    def __init__(
        self, system: str, refs: dict[str, list[str]], poll_seconds: float, deadline: str, phase: str = "answer"
    ) -> None:
        super().__init__()
        self.system, self.refs, self.poll_seconds, self.deadline = system, refs, poll_seconds, deadline
        self.phase = phase

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{__name__}.PartnerReplyTrigger",
            {
                "system": self.system,
                "refs": self.refs,
                "poll_seconds": self.poll_seconds,
                "deadline": self.deadline,
                "phase": self.phase,
            },
        )

    async def run(self):
        from include.dsr.core.errors import TransientError

        deadline = datetime.fromisoformat(self.deadline)
        errors = 0
        while True:
            # Wait first: the task polled just before deferring, and resuming within a second
            # of deferral races the scheduler (apache/airflow#72716: the resumed try is killed).
            await asyncio.sleep(self.poll_seconds)
            try:
                state = await asyncio.to_thread(_poll, self.system, self.refs)
                errors = 0
            except TransientError as exc:
                errors += 1
                if errors >= MAX_POLL_ERRORS:
                    yield TriggerEvent({"status": ERROR, "message": str(exc), "refs": self.refs, "phase": self.phase})
                    return
                state = "pending"
            if state in (COMPLETED, FAILED):
                yield TriggerEvent({"status": state, "refs": self.refs, "phase": self.phase})
                return
            if datetime.now(UTC) >= deadline:
                yield TriggerEvent({"status": TIMEOUT, "refs": self.refs, "phase": self.phase})
                return


class GatherOperator(BaseOperator):
    """Gather one fan-out target: an internal collection group, or a partner's answer.

    :param right: the request's right (access, portability, ...)
    :param target: ``{"system": key, "group": ...}`` (internal) or ``{"system": key, "channel": ...}``
    """

    ui_color = "#fdf2d0"

    def __init__(self, *, right: str, target: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        self.right, self.target = right, target

    def _runtime(self):
        from include.dsr.rights.runtime import Runtime

        return Runtime.from_airflow()

    def execute(self, context) -> dict:
        from include.dsr.core.errors import TransientError
        from include.dsr.rights import gathering, partner_exchange

        request_id = context["params"]["request_id"]
        system = self.target["system"]
        rt = self._runtime()
        if "channel" not in self.target:
            return run_step(lambda: gathering.gather_internal(rt, request_id, self.right, self.target))
        try:
            sent = run_step(lambda: partner_exchange.submit(rt, request_id, self.right, system))
        except TransientError as exc:
            partner_exchange.not_answering(rt, request_id, system, str(exc))
            raise
        state = partner_exchange.wait_briefly(
            rt, system, sent["refs"], sent["state"], settings.PARTNER_INLINE_WAIT_SECONDS
        )
        if state == COMPLETED:
            return partner_exchange.collect(rt, request_id, system, sent["refs"])
        self.defer(
            trigger=PartnerReplyTrigger(
                system, sent["refs"], settings.PARTNER_POLL_SECONDS, self._deadline(rt, request_id).isoformat()
            ),
            method_name="execute_complete",
        )

    def _deadline(self, rt, request_id: str) -> datetime:
        """Wait until the request's due date (or the configured maximum, for tests and drills)."""
        from include.dsr.rights.partner_exchange import batch_due_at

        due = batch_due_at(rt, request_id, self.target["system"])
        if settings.PARTNER_MAX_WAIT_SECONDS:
            return min(due, datetime.now(UTC) + timedelta(seconds=settings.PARTNER_MAX_WAIT_SECONDS))
        return due

    def execute_complete(self, context, event: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from include.dsr.core.errors import TransientError
        from include.dsr.rights import partner_exchange

        request_id = context["params"]["request_id"]
        system = self.target["system"]
        rt = self._runtime()
        status, refs = event["status"], event["refs"]
        if status == COMPLETED:
            return partner_exchange.collect(rt, request_id, system, refs)
        if status == TIMEOUT:
            deadline = self._deadline(rt, request_id).isoformat()
            reason = f"partner {system} did not answer request {request_id} before {deadline}"
            partner_exchange.fail(rt, request_id, system, reason)
            raise AirflowFailException(reason)
        # A failed answer or a partner that kept erroring: let Airflow retry (the retry re-submits).
        why = partner_exchange.failure_reasons(rt, system, refs) if status == "failed" else event.get("message", "")
        reason = partner_exchange.clean(rt, request_id, f"partner {system} answered {status}: {why}")
        partner_exchange.not_answering(rt, request_id, system, reason)
        raise TransientError(f"request {request_id}: {reason}")
