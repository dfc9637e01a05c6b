"""The shape of the erasure DAG (``dsr_erasure``): the shared intake, then plan, erase, tell, check, close.

intake (validate, verify, resolve, identity decision; or intake_wave for a wave of requests) ->
plan_erasure -> erase_platform ->
erase_objects -> check_erasure; plan_erasure -> tell_partner[*] (deferrable, checked by reading
back) and confirm_manual_partner[*]; all of them -> close_request. ``report_erasure_plan`` is the
dry run. Task bodies call :mod:`include.dsr.rights.erasure`; XCom carries ids and counts.
"""

from __future__ import annotations

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import DAG, task

from include import settings
from include.dsr.orchestration.dag_factory import (
    _manual_body,
    _runtime,
    form_param,
    intake_tasks,
    right_dag,
)
from include.dsr.orchestration.errors import run_step
from include.dsr.orchestration.partner_notice import PartnerNoticeOperator

RIGHT = "erasure"
#: What ops record for a partner without an interface.
MANUAL_ERASED, MANUAL_NO_DATA, MANUAL_REFUSED = (
    "Partner confirmed the erasure",
    "Partner holds no data",
    "Partner refused or did not answer",
)


def build_erasure_dag(doc_md: str, tags: list[str]) -> DAG:
    with right_dag(RIGHT, doc_md, tags) as dag:

        @task(trigger_rule="none_failed_min_one_success")
        def plan_erasure(**context) -> list[dict]:
            from include.dsr.rights import erasure

            return run_step(lambda: erasure.plan_erasure(_runtime(), context["params"]["request_id"]))["partners"]

        @task
        def report_erasure_plan(**context) -> dict:
            from include.dsr.rights import erasure

            return run_step(lambda: erasure.dry_run_plan(_runtime(), context["dag_run"].conf))

        @task
        def erase_platform(**context) -> dict:
            from include.dsr.rights import erasure

            return run_step(lambda: erasure.erase_platform(_runtime(), context["params"]["request_id"]))

        @task
        def erase_objects(**context) -> dict:
            from include.dsr.rights import erasure

            return run_step(lambda: erasure.erase_objects(_runtime(), context["params"]["request_id"]))

        @task
        def check_erasure(**context) -> dict:
            from include.dsr.rights import erasure

            return run_step(lambda: erasure.check_erasure(_runtime(), context["params"]["request_id"]))

        @task
        def plan_manual_partners(**context) -> list[str]:
            rt, request_id = _runtime(), context["params"]["request_id"]
            manual = rt.staging(request_id).get_json("manual_targets.json")
            return [_manual_body(t["system"], RIGHT, request_id) for t in manual]

        # Runs when the checks passed, whatever the partners did: requests whose recipients all
        # confirmed close, the others stay open with the reason (the task then fails).
        @task(trigger_rule="all_done")
        def close_request(**context) -> dict:
            from include.dsr.orchestration.metadata_purge import purge_closed_request
            from include.dsr.rights import erasure, manual_partners

            if context["ti"].xcom_pull(task_ids="plan_erasure") is None:
                from airflow.sdk.exceptions import AirflowSkipException

                raise AirflowSkipException("nothing was planned (a dry run, a refusal or a closed request)")
            rt, request_id, conf = _runtime(), context["params"]["request_id"], context["dag_run"].conf
            manual_partners.record_replies(
                rt, request_id, context["ti"], action="erase", confirmed=(MANUAL_ERASED, MANUAL_NO_DATA)
            )
            closed = run_step(lambda: erasure.close_erasure(rt, request_id, conf))
            if not closed.get("wave"):  # a wave's conf names its file and holds no identity
                purge_closed_request(rt.ledger, request_id)
            return closed

        joins = intake_tasks(RIGHT, proceed="plan_erasure", dry_run="report_erasure_plan", waves=True)
        partners = plan_erasure()
        joins[1:] >> partners
        joins[0] >> report_erasure_plan()
        platform = erase_platform()
        objects = erase_objects()
        checked = check_erasure()
        partners >> platform >> objects >> checked
        told = PartnerNoticeOperator.partial(
            task_id="tell_partner",
            queue=settings.FANOUT_QUEUE,
            right=RIGHT,
            max_active_tis_per_dagrun=6,
            map_index_template="{{ task.target['system'] }}",
        ).expand(target=partners)
        manual_bodies = plan_manual_partners()
        partners >> manual_bodies
        manual = HITLOperator.partial(
            task_id="confirm_manual_partner",
            retries=0,
            options=[MANUAL_ERASED, MANUAL_NO_DATA, MANUAL_REFUSED],
            subject="Record a manual partner's answer to the erasure of request {{ params.request_id }}",
            params={"record_count": form_param(0, type="integer", minimum=0, title="Records the partner erased")},
        ).expand(body=manual_bodies)
        [checked, told, manual] >> close_request()
    return dag
