"""Telling a partner to erase, and checking it did: one deferrable operator per partner.

``PartnerEraseOperator`` sends the erasure request through the partner's channel and waits for
the answer in the triggerer (no worker slot held, against the request's deadline). When the
partner says it erased, the operator records what it counted, then reads back what the partner
still holds (an access request, where the channel allows one): rows left in a collection the
partner has no legal duty to keep mean the claim was false, and the partner's row fails with
that reason. Either wait may be deferred; the trigger's ``phase`` says which one resumed.
"""

from __future__ import annotations

from include import settings
from include.dsr.orchestration.errors import run_step
from include.dsr.orchestration.gather import COMPLETED, TIMEOUT, GatherOperator, PartnerReplyTrigger

ERASE, VERIFY = "erase", "verify"


class PartnerEraseOperator(GatherOperator):
    """:param target: ``{"system": key, "channel": "api" | "s3_dropbox"}``"""

    ui_color = "#f6d5d5"

    def execute(self, context) -> dict:
        return self._send(context, ERASE)

    def _send(self, context, phase: str) -> dict:
        from include.dsr.core.errors import TransientError
        from include.dsr.rights import partner_exchange

        request_id, system, rt = context["params"]["request_id"], self.target["system"], self._runtime()
        try:
            sent = run_step(lambda: partner_exchange.submit(rt, request_id, "erasure", system, verify=phase == VERIFY))
        except TransientError as exc:
            partner_exchange.not_answering(rt, request_id, system, str(exc), right="erasure")
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

        request_id, system, rt = context["params"]["request_id"], self.target["system"], self._runtime()
        if phase == ERASE:
            partner_exchange.confirm_erasure(rt, request_id, system, refs)
            return self._send(context, VERIFY)
        checked = partner_exchange.verify_erasure(rt, request_id, system, refs)
        if not checked["verified"]:
            raise AirflowFailException(checked["reason"])  # the request stays open with this reason
        return {"system": system, "verified": True}

    def execute_complete(self, context, event: dict) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from include.dsr.core.errors import TransientError
        from include.dsr.rights import partner_exchange

        request_id, system, rt = context["params"]["request_id"], self.target["system"], self._runtime()
        status, refs, phase = event["status"], event["refs"], event.get("phase", ERASE)
        if status == COMPLETED:
            return self._answered(context, phase, refs)
        if status == TIMEOUT:
            reason = (
                f"partner {system} did not confirm the erasure of request {request_id} before "
                f"{self._deadline(rt, request_id).isoformat()}"
            )
            partner_exchange.fail(rt, request_id, system, reason, right="erasure")
            raise AirflowFailException(reason)
        why = partner_exchange.failure_reasons(rt, system, refs) if status == "failed" else event.get("message", "")
        reason = partner_exchange.clean(rt, request_id, f"partner {system} answered {status}: {why}")
        partner_exchange.not_answering(rt, request_id, system, reason, right="erasure")
        raise TransientError(f"request {request_id}: {reason}")
