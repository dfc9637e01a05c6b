"""The shapes of the DAGs of the rights that change data in place: restriction (and its lift),
rectification, objection and consent withdrawal.

Each is the shared intake, then: plan (checks the request can be carried out, records the rows
to complete; the dry run reports instead) -> the platform change (one transaction) -> Great
Expectations checks -> close; beside it ``tell_partner[*]`` (deferrable, one per recipient,
Art. 19) and ``confirm_manual_partner[*]``. Close runs whatever the partners did: the request
closes once every automated recipient confirmed, else it stays open with the reason. Task bodies
call ``include.dsr.rights``; XCom carries partner targets and counts only.
"""

from __future__ import annotations

from collections.abc import Callable

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import DAG, task

from include import settings
from include.dsr.core.request import OBJECTION_DECISIONS
from include.dsr.orchestration.assets import RESTRICTIONS
from include.dsr.orchestration.dag_factory import _manual_body, _runtime, form_param, intake_tasks, right_dag
from include.dsr.orchestration.errors import run_step
from include.dsr.orchestration.partner_notice import PartnerNoticeOperator

#: What ops record for a partner without an interface.
MANUAL_DONE, MANUAL_NO_DATA, MANUAL_REFUSED = (
    "Partner confirmed",
    "Partner holds no data",
    "Partner refused or did not answer",
)


def _request_step(task_id: str, module: str, function: str, **task_kwargs):
    """A task running ``include.dsr.rights.<module>.<function>(runtime, request_id)`` (a platform
    change or a check: counts back, through ``run_step``'s error mapping)."""

    @task(task_id=task_id, **task_kwargs)
    def step(**context) -> dict:
        import importlib

        steps = importlib.import_module(f"include.dsr.rights.{module}")
        return run_step(lambda: getattr(steps, function)(_runtime(), context["params"]["request_id"]))

    return step()


def _dry_run(right: str):
    @task
    def report_dry_run(**context) -> dict:
        from include.dsr.rights import gathering

        return run_step(lambda: gathering.dry_run_report(_runtime(), context["dag_run"].conf, right))

    return report_dry_run()


def _recipient_tasks(right: str, partners, kind: Callable[[dict], str], after: list):
    """tell_partner[*] over the plan's automated recipients, confirm_manual_partner[*] over the
    manual ones; both only once the ``after`` tasks changed the platform (a lift: once the subject
    was told), so no recipient, and no ops member, hears of a change before it is made."""

    @task(trigger_rule="none_failed_min_one_success")
    def plan_manual_partners(**context) -> list[str]:
        rt, request_id = _runtime(), context["params"]["request_id"]
        manual = rt.staging(request_id).get_json("manual_targets.json")
        return [_manual_body(t["system"], kind(context["params"]), request_id) for t in manual]

    told = PartnerNoticeOperator.partial(
        task_id="tell_partner",
        queue=settings.FANOUT_QUEUE,
        right=right,
        trigger_rule="none_failed_min_one_success",  # a restriction's apply or lift path ran
        max_active_tis_per_dagrun=6,
        map_index_template="{{ task.target['system'] }}",
    ).expand(target=partners)
    bodies = plan_manual_partners()
    [partners, *after] >> bodies
    after >> told
    manual = HITLOperator.partial(
        task_id="confirm_manual_partner",
        retries=0,
        options=[MANUAL_DONE, MANUAL_NO_DATA, MANUAL_REFUSED],
        subject="Record a manual partner's answer to request {{ params.request_id }}",
        params={"record_count": form_param(0, type="integer", minimum=0, title="Records the partner changed")},
    ).expand(body=bodies)
    return told, manual


def _close(right: str, closer: Callable, action: Callable[[dict], str]):
    # Runs when the checks passed, whatever the partners did: a request whose recipients all
    # confirmed closes, the others stay open with the reason (the task then fails).
    @task(trigger_rule="all_done")
    def close_request(**context) -> dict:
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from include.dsr.orchestration.metadata_purge import purge_closed_request
        from include.dsr.rights import manual_partners
        from include.dsr.rights.partner_exchange import action_of

        ti = context["ti"]
        rt, request_id, conf = _runtime(), context["params"]["request_id"], context["dag_run"].conf
        if ti.xcom_pull(task_ids="plan_changes") is None:
            row = rt.ledger.get_request(request_id)
            if row is not None and row.status == "failed":  # the run fails with its request (a refused lift)
                raise AirflowFailException(f"request {request_id} failed: {row.outcome_summary}")
            raise AirflowSkipException("nothing was planned (a dry run, a refusal or a closed request)")
        if ti.xcom_pull(task_ids="check_changes") is None:
            raise AirflowFailException("the checks did not pass; the request stays open")
        manual_partners.record_replies(
            rt,
            request_id,
            ti,
            action=action_of(action(context["params"])),
            confirmed=(MANUAL_DONE, MANUAL_NO_DATA),
        )
        closed = run_step(lambda: closer(rt, request_id, conf))
        purge_closed_request(rt.ledger, request_id)
        return closed

    return close_request()


def build_restriction_dag(doc_md: str, tags: list[str]) -> DAG:
    """apply: plan -> restrict_platform -> check; lift: plan -> notify_lift -> lift_platform -> check."""
    right = "restriction"

    def kind(params: dict) -> str:
        from include.dsr.rights.partner_exchange import request_type

        return request_type(right, params.get("action"))

    with right_dag(right, doc_md, tags) as dag:

        @task(trigger_rule="none_failed_min_one_success")
        def plan_changes(**context) -> list[dict]:
            from include.dsr.rights import restriction

            rt, request_id = _runtime(), context["params"]["request_id"]
            action = context["dag_run"].conf.get("action")
            return run_step(lambda: restriction.plan_restriction(rt, request_id, action))["partners"]

        @task.branch
        def route_action(**context) -> str:
            return "notify_lift" if context["dag_run"].conf.get("action") == "lift" else "restrict_platform"

        @task
        def notify_lift(**context) -> dict:
            from include.dsr.rights import restriction

            rt, request_id = _runtime(), context["params"]["request_id"]
            return run_step(lambda: restriction.notify_lift(rt, request_id, context["dag_run"].conf))

        @task(trigger_rule="none_failed_min_one_success")
        def check_changes(**context) -> dict:
            from include.dsr.rights import restriction

            rt, request_id = _runtime(), context["params"]["request_id"]
            return run_step(lambda: restriction.check_restriction(rt, request_id, context["dag_run"].conf["action"]))

        def closer(rt, request_id, conf):
            from include.dsr.rights import restriction

            return restriction.close_restriction(rt, request_id, conf, conf["action"])

        joins = intake_tasks(right, proceed="plan_changes", dry_run="report_dry_run")
        partners = plan_changes()
        joins[1:] >> partners
        joins[0] >> _dry_run(right)
        routed = route_action()
        checked = check_changes()
        lifted = _request_step("lift_platform", "restriction", "lift_platform", outlets=[RESTRICTIONS])
        restricted = _request_step("restrict_platform", "restriction", "apply_platform", outlets=[RESTRICTIONS])
        partners >> routed >> [restricted, notify_lift()]
        dag.get_task("notify_lift") >> lifted
        [restricted, lifted] >> checked
        told, manual = _recipient_tasks(right, partners, kind, after=[restricted, lifted])
        [checked, told, manual] >> _close(right, closer, kind)
    return dag


def build_rectification_dag(doc_md: str, tags: list[str]) -> DAG:
    """plan -> rectify_platform -> check; tell_partner[*] after the platform change."""
    right = "rectification"
    with right_dag(right, doc_md, tags) as dag:

        @task(trigger_rule="none_failed_min_one_success")
        def plan_changes(**context) -> list[dict]:
            from include.dsr.rights import rectification

            rt, request_id = _runtime(), context["params"]["request_id"]
            return run_step(lambda: rectification.plan_rectification(rt, request_id, context["dag_run"].conf))[
                "partners"
            ]

        def closer(rt, request_id, conf):
            from include.dsr.rights import rectification

            return rectification.close_rectification(rt, request_id, conf)

        joins = intake_tasks(right, proceed="plan_changes", dry_run="report_dry_run")
        partners = plan_changes()
        joins[1:] >> partners
        joins[0] >> _dry_run(right)
        platform = _request_step("rectify_platform", "rectification", "rectify_platform")
        checked = _request_step("check_changes", "rectification", "check_rectification")
        partners >> platform >> checked
        told, manual = _recipient_tasks(right, partners, lambda params: right, after=[platform])
        [checked, told, manual] >> _close(right, closer, lambda params: right)
    return dag


def build_objection_dag(doc_md: str, tags: list[str]) -> DAG:
    """plan -> stop_immediately (direct marketing, consents) -> route_weighing ->
    (weigh_objection: ops, for legitimate interests -> apply_decision) -> check."""
    right = "objection"

    with right_dag(right, doc_md, tags) as dag:

        @task(trigger_rule="none_failed_min_one_success")
        def plan_changes(**context) -> dict:
            from include.dsr.rights import objection

            rt, request_id = _runtime(), context["params"]["request_id"]
            return run_step(lambda: objection.plan_objection(rt, request_id, context["dag_run"].conf))

        # Once every purpose is decided: only recipients processing a purpose that stopped are told.
        @task
        def partner_targets(**context) -> list[dict]:
            from include.dsr.rights import objection

            return run_step(lambda: objection.plan_recipients(_runtime(), context["params"]["request_id"]))["partners"]

        @task.branch
        def route_weighing(**context) -> str:
            planned = context["ti"].xcom_pull(task_ids="plan_changes")
            return "weighing_body" if planned["weigh"] else "nothing_to_weigh"

        @task
        def nothing_to_weigh() -> dict:
            return {"weighed": 0}

        @task
        def weighing_body(**context) -> str:
            from include.dsr.rights import objection

            return objection.weigh_body(_runtime(), context["params"]["request_id"])

        weigh = HITLOperator(
            task_id="weigh_objection",
            retries=0,
            options=OBJECTION_DECISIONS,
            subject="Objection in request {{ params.request_id }}: weigh the legitimate interests",
            body="{{ ti.xcom_pull(task_ids='weighing_body') }}",
            params={
                "reason": form_param(
                    "",
                    type="string",
                    maxLength=1000,
                    title="Compelling grounds (if you override)",
                    description="Plain words; the subject reads them with the right to complain.",
                )
            },
        )

        @task(outlets=[RESTRICTIONS])
        def apply_decision(**context) -> dict:
            from include.dsr.rights import objection

            rt, reply = _runtime(), context["ti"].xcom_pull(task_ids="weigh_objection")
            return run_step(lambda: objection.apply_decision(rt, context["params"]["request_id"], reply))

        def closer(rt, request_id, conf):
            from include.dsr.rights import objection

            return objection.close_objection(rt, request_id, conf)

        joins = intake_tasks(right, proceed="plan_changes", dry_run="report_dry_run")
        planned = plan_changes()
        joins[1:] >> planned
        joins[0] >> _dry_run(right)
        stopped = _request_step("stop_immediately", "objection", "apply_immediate", outlets=[RESTRICTIONS])
        routed = route_weighing()
        checked = _request_step(
            "check_changes", "objection", "check_objection", trigger_rule="none_failed_min_one_success"
        )
        planned >> stopped >> routed
        body = weighing_body()
        routed >> [body, nothing_to_weigh()]
        body >> weigh >> apply_decision() >> checked
        dag.get_task("nothing_to_weigh") >> checked
        partners = partner_targets()
        checked >> partners
        told, manual = _recipient_tasks(right, partners, lambda params: right, after=[])
        [checked, told, manual] >> _close(right, closer, lambda params: right)
    return dag
