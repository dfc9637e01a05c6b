"""The shape shared by the gathering right DAGs (access, portability).

validate_request -> check_identity -> (record_verification | confirm_identity) ->
resolve_subject -> gather[*] (internal groups, partners) + plan_manual_partners ->
confirm_manual_partner[*] -> validate_results -> build_package -> close_request

Task bodies are a few lines that call ``include.dsr.rights`` (intake, gathering); nothing heavy is imported
when the DAG file is parsed. XCom carries ids, counts and fan-out targets only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import DAG, Param, task

from include import settings
from include.dsr.connectors.partner_manual import OPTIONS as MANUAL_OPTIONS
from include.dsr.core.request import (
    ACCOUNT_ID_MAX,
    EMAIL_FIELD_PATTERN,
    EMAIL_MAX,
    FORM_SUBJECT_KEYS,
    JURISDICTIONS,
    PHONE_FIELD_PATTERN,
    PHONE_MAX,
    REQUEST_ID_PATTERN,
    RESTRICTION_ACTIONS,
    TIMESTAMP_PATTERN,
    VERIFICATION_LABELS,
    VERIFICATION_METHODS,
    WAVE_KEY_PATTERN,
    WAVE_RIGHTS,
)
from include.dsr.orchestration.deadline_alert import request_deadline_alert
from include.dsr.orchestration.errors import run_step
from include.dsr.orchestration.gather import GatherOperator
from include.dsr.rights.intake import DECISION_OPTIONS, DEFAULT_CONFLICT_REASON

DEFAULT_ARGS = {
    "owner": "privacy-ops",
    "retries": settings.TASK_RETRIES,
    "retry_delay": timedelta(seconds=settings.TASK_RETRY_DELAY_SECONDS),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(hours=1),
}


#: The JSON Schema draft every Param declares. Airflow validates a DAG's Params against their
#: schemas many times per task (each ``ParamsDict`` compare and repr dumps them all), and
#: ``jsonschema.validate`` first checks the schema itself against its draft's meta-schema: draft
#: 2020-12's (the default) costs 2.5 to 3 times draft-07's, which has every keyword these use.
PARAM_SCHEMA_DRAFT = "http://json-schema.org/draft-07/schema#"


def form_param(*args: Any, **schema: Any) -> Param:
    """A ``Param`` whose schema declares :data:`PARAM_SCHEMA_DRAFT`."""
    return Param(*args, **{"$schema": PARAM_SCHEMA_DRAFT, **schema})


SUBJECT_SECTION = "Who is asking"
VERIFICATION_SECTION = "Identity check"
RAW_SECTION = "The same, as one object (REST and the CLI send these)"


#: One JSON schema per identity: the form's field and the ``subject`` object check the same.
IDENTITY_SCHEMAS: dict[str, dict] = {
    "email": {"type": ["null", "string"], "maxLength": EMAIL_MAX, "pattern": EMAIL_FIELD_PATTERN},
    "phone": {"type": ["null", "string"], "maxLength": PHONE_MAX, "pattern": PHONE_FIELD_PATTERN},
    "account_id": {"type": ["null", "integer"], "minimum": 1, "maximum": ACCOUNT_ID_MAX},
    "phone_region": {"type": ["null", "string"], "pattern": "^[A-Za-z]{2}$"},
}
IDENTITY_FORM_TEXT = {
    "email": {
        "title": "Email",
        "description": "The email address the subject wrote from or has an account with, e.g. maria@example.com.",
    },
    "phone": {
        "title": "Phone",
        "description": "In international format, e.g. +49 30 1234567. A national number needs the country below.",
    },
    "account_id": {"title": "Account id", "description": "The subject's Fabconnect account number, if known."},
    "phone_region": {
        "title": "Country of the phone number",
        "description": "Two letters, e.g. DE: only needed when the phone number has no +country code.",
    },
}


def request_params(right: str) -> dict[str, Param]:
    """The run conf as Params, so the trigger form validates it (the engine re-checks everything)."""
    identity_fields = {
        flat: form_param(None, **IDENTITY_SCHEMAS[key], **IDENTITY_FORM_TEXT[key], section=SUBJECT_SECTION)
        for flat, key in FORM_SUBJECT_KEYS.items()
    } | {
        "verification_method": form_param(
            None,
            type=["null", "string"],
            enum=[None, *VERIFICATION_METHODS],
            values_display={None: "Not verified yet: ops confirm in the run", **VERIFICATION_LABELS},
            title="How the identity was verified",
            description="Leave empty when nobody has checked yet: the run then waits for ops to confirm.",
            section=VERIFICATION_SECTION,
        ),
        "verified_at": form_param(
            None,
            type=["null", "string"],
            pattern=TIMESTAMP_PATTERN,
            title="Verified at",
            description="When it was verified, e.g. 2026-11-25T09:30:00Z; empty means now.",
            section=VERIFICATION_SECTION,
        ),
    }
    params = {
        "request_id": form_param(
            type="string",
            pattern=REQUEST_ID_PATTERN,
            title="Request id",
            description="The request's reference, e.g. DSR-2026-0001: letters, digits, '.', '_' or '-'. "
            "Never an email.",
        ),
        "received_at": form_param(
            None,
            type=["null", "string"],
            pattern=TIMESTAMP_PATTERN,
            title="Received at",
            description="When the request arrived, with a timezone, e.g. 2026-11-25T09:30:00Z (the one-month "
            "clock starts here); empty means now.",
        ),
        "jurisdiction": form_param("GDPR", enum=list(JURISDICTIONS), title="Jurisdiction"),
        "dry_run": form_param(
            False, type="boolean", title="Dry run", description="Count and plan only: nothing is changed or sent."
        ),
        **identity_fields,
        "subject": form_param(
            {"email": None, "phone": None, "account_id": None},
            type="object",
            title="Subject (as sent by REST and the CLI)",
            description="The same identities as one object; leave it empty when the fields above are used.",
            properties=IDENTITY_SCHEMAS,
            additionalProperties=False,
            section=RAW_SECTION,
        ),
        "verification": form_param(
            None,
            type=["null", "object"],
            title="Verification (as sent by REST and the CLI)",
            description="{method, verified_at}; leave it empty when the fields above are used.",
            properties={
                "method": {"enum": list(VERIFICATION_METHODS)},
                "verified_at": {"type": "string", "pattern": TIMESTAMP_PATTERN},
            },
            required=["method", "verified_at"],
            additionalProperties=False,
            section=RAW_SECTION,
        ),
    }
    if right == "portability":
        params["transmit_to"] = form_param(
            None,
            type=["null", "string"],
            maxLength=2000,
            pattern="^https?://",
            title="Transmit to",
            description="Optional: the https endpoint of another controller to send the data to (Art. 20(2)); "
            "only controllers declared by ops (DSR_RECEIVING_CONTROLLERS) are accepted.",
        )
    if right == "restriction":
        params["action"] = form_param("apply", enum=list(RESTRICTION_ACTIONS), title="Action")
    if right == "rectification":
        params["corrections"] = form_param(
            [],
            type="array",
            title="Corrections",
            description="[{field: 'accounts.email', value: ..., row_id: (for a row among several)}]; "
            "only fields the data map marks rectifiable",
            items={
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "value": {"type": "string"},
                    "row_id": {"type": ["null", "integer"]},
                },
                "required": ["field", "value"],
            },
        )
    if right == "objection":
        params["purposes"] = form_param(
            [],
            type="array",
            title="Purposes objected to",
            description="Data-map purpose keys, e.g. marketing, pricing, service_improvement, testimonials",
            items={"type": "string"},
        )
        params["grounds"] = form_param(
            None,
            type=["null", "string"],
            maxLength=2000,
            title="The subject's grounds",
            description="Optional: the subject's reasons (Art. 21(1)); ops read them when weighing.",
        )
    if right in WAVE_RIGHTS:
        params["wave"] = form_param(
            None,
            type=["null", "string"],
            pattern=WAVE_KEY_PATTERN,
            title="Wave file",
            description="Key of a JSON Lines file of requests in the exports bucket (one request per line); "
            "request_id then names the wave and subject stays empty. See README, Waves.",
        )
    return params


def _runtime():
    from include.dsr.rights.runtime import Runtime

    return Runtime.from_airflow()


def record_task_failure(context) -> None:
    """on_failure_callback: the request shows the failure in the ledger (ids and reasons only).

    A failure of ``validate_request`` after the request was recorded (the acknowledgement could
    not be sent, say) marks it failed too: no request stays ``in_progress`` with no outcome.
    Refused input never reached the ledger, and a ``request_id`` that belongs to another
    subject is left alone.
    """
    from include.dsr.core.errors import DSRError
    from include.dsr.core.request import is_wave
    from include.dsr.rights import intake

    conf = context["dag_run"].conf or {}
    request_id = (context.get("params") or {}).get("request_id")
    task_id = context["task_instance"].task_id
    if not request_id:
        return
    exc = context.get("exception")
    # Our messages name ids only; foreign exceptions may quote data, so only their type is kept.
    detail = str(exc) if isinstance(exc, DSRError) or "AirflowFail" in type(exc).__name__ else type(exc).__name__
    rt = _runtime()
    from include.dsr.rights.partner_exchange import clean

    # A partner's refusal may quote what it holds (a name): cleaned with the staged subject too.
    detail = clean(rt, request_id, detail, limit=400)
    right = context["dag"].dag_id.removeprefix("dsr_")
    target = getattr(context.get("task"), "target", None)
    if is_wave(conf):  # each request the wave took in shows the failure
        from include.dsr.rights import partner_exchange, waves

        if isinstance(target, dict) and target.get("channel"):
            partner_exchange.fail(rt, request_id, target["system"], detail, right=right)
        members = waves.accepted_request_ids(rt, request_id)
        rows = rt.ledger.get_requests(members)
        for member in members:  # a request that failed on its own already keeps its own reason
            if member in rows and rows[member].status != "failed":
                intake.mark_failed(rt, member, f"{task_id}: {detail}")
        return
    if intake.owns_ledger_row(rt, conf, right) is None:
        return  # refused before recording, a dry run, or another subject's request id
    if task_id == "confirm_identity" and type(exc).__name__ == "HITLRejectException":
        # ops rejected the identity proof: a refusal, not a failure (a timeout or crash is a failure)
        from include.dsr.orchestration.metadata_purge import purge_closed_request

        intake.refuse(rt, request_id, "identity could not be verified", conf)
        purge_closed_request(rt.ledger, request_id)
        return
    if isinstance(target, dict) and target.get("channel"):
        from include.dsr.rights import partner_exchange

        partner_exchange.fail(rt, request_id, target["system"], detail, right=right)
    intake.mark_failed(rt, request_id, f"{task_id}: {detail}")


def intake_tasks(right: str, proceed: str, dry_run: str, waves: bool = False) -> list:
    """The intake every right shares, added to the DAG being built; returns the tasks ``proceed`` follows.

    validate_request -> check_identity -> (record_verification | confirm_identity -> record_verification
    | ``dry_run``) -> resolve_subject -> route_identity -> (``proceed`` | decide_identity ->
    apply_identity_decision -> ``proceed`` or end, refused). ``proceed`` needs the trigger rule
    ``none_failed_min_one_success``; both it and ``dry_run`` are the caller's tasks.

    With ``waves``, a conf naming a wave file goes check_identity -> intake_wave -> ``proceed``
    (every line recorded, acknowledged and resolved in one batch; see ``rights.waves``).
    """

    @task
    def validate_request(**context) -> dict:
        from include.dsr.core.request import is_wave, parse_wave
        from include.dsr.rights import intake

        rt, conf = _runtime(), context["dag_run"].conf
        if waves and is_wave(conf):
            wave = run_step(lambda: parse_wave(conf, right))
            return {"request_id": wave.wave_id, "wave": True, "dry_run": wave.dry_run, "closed": False}
        started = run_step(lambda: intake.start_request(rt, conf, right, context["run_id"]))
        if started["closed"]:  # nothing to do; this run's conf copy of the identities goes at once
            from include.dsr.orchestration.metadata_purge import purge_closed_request

            purge_closed_request(rt.ledger, started["request_id"])
        elif not started["dry_run"]:
            started["acknowledged"] = run_step(lambda: intake.acknowledge(rt, conf, started["request_id"]))
        return started

    @task.branch
    def check_identity(started: dict) -> str | list[str]:
        if started["closed"]:
            return []  # a re-run of a closed request does nothing (validate_request said so)
        if started["dry_run"]:
            return dry_run
        if started.get("wave"):
            return "intake_wave"
        return "record_verification" if started["verified"] else "confirm_identity"

    confirm_identity = ApprovalOperator(
        task_id="confirm_identity",
        subject="Confirm the identity of the subject of request {{ params.request_id }}",
        body="Check the proof of identity for this request (identities are in the run's conf). "
        "Approve to proceed; reject to refuse the request.",
        fail_on_reject=True,
        retries=0,  # a human step: a retry would ask ops again, or turn a rejection into a new prompt
    )

    @task(trigger_rule="none_failed_min_one_success")
    def record_verification(**context) -> dict:
        from include.dsr.rights import intake

        return run_step(lambda: intake.record_verification(_runtime(), context["dag_run"].conf, right))

    @task
    def resolve_subject(**context) -> dict:
        from include.dsr.rights import intake

        return run_step(lambda: intake.resolve(_runtime(), context["dag_run"].conf, right))

    @task.branch
    def route_identity(resolved: dict) -> str:
        return "decide_identity" if resolved["route"] == "conflict" else proceed

    decide_identity = HITLOperator(
        task_id="decide_identity",
        retries=0,
        options=DECISION_OPTIONS,
        subject="Identity conflict in request {{ params.request_id }}: decide how to go on",
        body="{{ ti.xcom_pull(task_ids='resolve_subject') | conflict_body }}",
        params={
            "reason": form_param(
                DEFAULT_CONFLICT_REASON,
                type="string",
                maxLength=500,
                title="Reason sent to the subject (if you refuse)",
                description="Plain words; the subject reads it with the right to complain.",
            )
        },
    )

    @task.branch
    def apply_identity_decision(**context) -> list[str]:
        from include.dsr.orchestration.metadata_purge import purge_closed_request
        from include.dsr.rights import intake

        rt, reply = _runtime(), context["ti"].xcom_pull(task_ids="decide_identity")
        done = run_step(lambda: intake.apply_identity_decision(rt, context["dag_run"].conf, right, reply))
        if done["route"] == "refused":
            purge_closed_request(rt.ledger, done["request_id"])
            return []
        return [proceed]

    started = validate_request()
    branch = check_identity(started)
    verified = record_verification()
    branch >> [verified, confirm_identity]
    joins_wave = []
    if waves:

        @task
        def intake_wave(**context) -> dict:
            from include.dsr.rights import waves as wave_intake

            conf = context["dag_run"].conf
            return run_step(lambda: wave_intake.start_wave(_runtime(), conf, right, context["run_id"]))

        taken = intake_wave()
        branch >> taken
        joins_wave = [taken]
    confirm_identity >> verified
    resolved = resolve_subject()
    verified >> resolved
    routed = route_identity(resolved)
    decided = apply_identity_decision()
    routed >> decide_identity >> decided
    return [branch, routed, decided, *joins_wave]


def _conflict_body(resolved: dict | None) -> str:
    from include.dsr.rights.intake import conflict_body

    return conflict_body(resolved or {})


def right_dag(right: str, doc_md: str, tags: list[str]) -> DAG:
    """The DAG object every right's DAG is built in: ``dsr_<right>``, manual runs only, the
    request's Params, the failure callback that reaches the ledger and the Deadline Alert."""
    return DAG(
        dag_id=f"dsr_{right}",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        tags=["dsr", "gdpr", *tags],
        params=request_params(right),
        default_args={**DEFAULT_ARGS, "on_failure_callback": record_task_failure},
        doc_md=doc_md,
        max_active_tasks=8,
        deadline=request_deadline_alert(),
        user_defined_filters={"conflict_body": _conflict_body},
    )


def build_gathering_dag(right: str, doc_md: str, tags: list[str]) -> DAG:
    """Access and portability: intake, then gather from every system family, check, package."""
    with right_dag(right, doc_md, tags) as dag:

        @task(trigger_rule="none_failed_min_one_success")
        def plan_fan_out(**context) -> list[dict]:
            from include.dsr.rights import gathering

            rt, request_id = _runtime(), context["params"]["request_id"]
            return run_step(lambda: gathering.plan_fan_out(rt, request_id, right))["gather"]

        @task
        def report_dry_run(**context) -> dict:
            from include.dsr.rights import gathering

            return run_step(lambda: gathering.dry_run_report(_runtime(), context["dag_run"].conf, right))

        @task
        def plan_manual_partners(**context) -> list[str]:
            """Instructions for each manual partner (usually none): one HITL task each."""
            rt, request_id = _runtime(), context["params"]["request_id"]
            manual = rt.staging(request_id).get_json("manual_targets.json")
            return [_manual_body(t["system"], right, request_id) for t in manual]

        # Runs when a gather succeeded and nothing failed (manual partners may be none: skipped);
        # skipped with them when the request was refused or was a dry run.
        @task(trigger_rule="none_failed_min_one_success")
        def validate_results(**context) -> dict:
            from include.dsr.rights import gathering, manual_partners

            rt, request_id = _runtime(), context["params"]["request_id"]
            manual_partners.record_replies(rt, request_id, context["ti"])
            return run_step(lambda: gathering.validate_results(rt, request_id, right))

        @task
        def build_package(**context) -> dict:
            from include.dsr.rights import gathering

            conf = context["dag_run"].conf
            return run_step(
                lambda: gathering.build_package(
                    _runtime(), context["params"]["request_id"], right, conf.get("transmit_to"), run_conf=conf
                )
            )

        @task
        def close_request(**context) -> dict:
            from include.dsr.orchestration.metadata_purge import purge_closed_request
            from include.dsr.rights import gathering

            rt, request_id = _runtime(), context["params"]["request_id"]
            closed = run_step(lambda: gathering.close_request(rt, request_id, context["dag_run"].conf))
            if "closed" not in closed:  # a wave's conf names its file and holds no identity
                purge_closed_request(rt.ledger, request_id)
            return closed

        joins = intake_tasks(right, proceed="plan_fan_out", dry_run="report_dry_run", waves=True)
        targets = plan_fan_out()
        joins[1:] >> targets
        joins[0] >> report_dry_run()
        gathered = GatherOperator.partial(
            task_id="gather",
            queue=settings.FANOUT_QUEUE,
            right=right,
            max_active_tis_per_dagrun=6,
            map_index_template=(
                "{{ task.target['system'] }}{{ ('.' ~ task.target['group']) if task.target.get('group') else '' }}"
            ),
        ).expand(target=targets)
        manual_bodies = plan_manual_partners()
        targets >> manual_bodies
        manual = HITLOperator.partial(
            task_id="confirm_manual_partner",
            retries=0,
            options=MANUAL_OPTIONS,
            subject="Record a manual partner's answer for request {{ params.request_id }}",
            params={"record_count": form_param(0, type="integer", minimum=0, title="Records the partner reported")},
        ).expand(body=manual_bodies)
        checked = validate_results()
        [gathered, manual] >> checked
        checked >> build_package() >> close_request()
    return dag


def _manual_body(system_key: str, right: str, request_id: str) -> str:
    from include.dsr.connectors.partner_manual import ManualPartnerConnector
    from include.dsr.core.data_map import load_data_map

    system = load_data_map().system(system_key)
    return ManualPartnerConnector(system).instructions(right, request_id)
