"""Telling a partner what a right asks of it (Art. 17(2), 19), and checking an erasure: one
deferrable operator per partner.

``PartnerNoticeOperator`` sends the right's request (erasure, restriction or its lift,
rectification, objection) through the partner's channel and waits for the answer in the
triggerer (no worker slot held, against the request's deadline), then records what the partner
counted. For an erasure and a rectification it then reads back what the partner holds (an access
request, where the channel allows one): rows left in a collection the partner has no legal duty
to keep, or rows still holding the old values, mean the claim was false, and the partner's row
fails with that reason. Either wait may be
deferred; the trigger's ``phase`` says which one resumed.
"""

from __future__ import annotations

from include import settings
from include.dsr.orchestration.errors import run_step
from include.dsr.orchestration.gather import COMPLETED, TIMEOUT, GatherOperator, PartnerReplyTrigger

SEND, VERIFY = "erase", "verify"  # phases ("erase" kept: triggers deferred by earlier releases say it)
#: Rights whose partner claim is checked by reading back what the partner holds.
CHECKED_BY_READING_BACK = ("erasure", "rectification")


class PartnerNoticeOperator(GatherOperator):
    """:param right: the DAG's right (a restriction's ``action`` param picks apply or lift)
    :param target: ``{"system": key, "channel": "api" | "s3_dropbox"}``"""

    ui_color = "#f6d5d5"

    def execute(self, context) -> dict:
        return self._send(context, SEND)

    def _kind(self, context) -> str:
        from include.dsr.rights.partner_exchange import request_type

        return request_type(self.right, context["params"].get("action"))

    def _send(self, context, phase: str) -> dict:
        from include.dsr.core.errors import TransientError
        from include.dsr.rights import partner_exchange

        request_id, system, rt, kind = (
            context["params"]["request_id"],
            self.target["system"],
            self._runtime(),
            self._kind(context),
        )
        try:
            sent = run_step(lambda: partner_exchange.submit(rt, request_id, kind, system, verify=phase == VERIFY))
        except TransientError as exc:
            partner_exchange.not_answering(rt, request_id, system, str(exc), right=kind)
            raise
        state = partner_exchange.wait_briefly(
            rt, system, sent["refs"], sent["state"], settings.PARTNER_INLINE_WAIT_SECONDS
        )
        if state == COMPLETED:
            return self._answered(context, phase, sent["refs"])
        self.defer(
            trigger=PartnerReplyTrigger(
                system,
                sent["refs"],
                settings.PARTNER_POLL_SECONDS,
                self._deadline(rt, request_id).isoformat(),
                phase=phase,
            ),
            method_name="execute_complete",
        )

    def _answered(self, context, phase: str, refs: dict[str, list[str]]) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from include.dsr.rights import partner_exchange

        request_id, system, rt, kind = (
            context["params"]["request_id"],
            self.target["system"],
            self._runtime(),
            self._kind(context),
        )
        if phase == SEND:
            confirmed = partner_exchange.confirm(rt, request_id, system, refs, kind)
            if kind not in CHECKED_BY_READING_BACK:
                return {"system": system, "affected": confirmed["affected"]}
            return self._send(context, VERIFY)
        if kind == "rectification":
            from include.dsr.rights import rectification

            checked = rectification.verify_partner(rt, request_id, system, refs)
        else:
            checked = partner_exchange.verify_erasure(rt, request_id, system, refs)
        if not checked["verified"]:
            raise AirflowFailException(checked["reason"])  # the request stays open with this reason
        return {"system": system, "verified": True}

    def execute_complete(self, context, event: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from include.dsr.core.errors import TransientError
        from include.dsr.rights import partner_exchange

        request_id, system, rt, kind = (
            context["params"]["request_id"],
            self.target["system"],
            self._runtime(),
            self._kind(context),
        )
        status, refs, phase = event["status"], event["refs"], event.get("phase", SEND)
        if status == COMPLETED:
            return self._answered(context, phase, refs)
        if status == TIMEOUT:
            reason = (
                f"partner {system} did not confirm the {kind.replace('_', ' ')} of request {request_id} before "
                f"{self._deadline(rt, request_id).isoformat()}"
            )
            partner_exchange.fail(rt, request_id, system, reason, right=kind)
            raise AirflowFailException(reason)
        why = partner_exchange.failure_reasons(rt, system, refs) if status == "failed" else event.get("message", "")
        reason = partner_exchange.clean(rt, request_id, f"partner {system} answered {status}: {why}")
        partner_exchange.not_answering(rt, request_id, system, reason, right=kind)
        raise TransientError(f"request {request_id}: {reason}")
