"""
### Benchmark Airflow DAG `dsr_noop_erasure_shape`: the task graph of `dsr_erasure`, with no-op bodies

Used by `bench/bench_e2e.py --right erasure` to measure what Airflow itself costs per erasure
request apart from the work in the task bodies. Same graph as a typical single `dsr_erasure`
run: validate_request -> check_identity (branch; confirm_identity, intake_wave and the dry run
skipped) -> record_verification -> resolve_subject -> route_identity (branch; decide_identity and
apply_identity_decision skipped) -> plan_erasure -> erase_platform -> erase_objects -> check_erasure, and, from
plan_erasure, `tell_partner` mapped over `n_targets` partners (same cap of 6 per run) and
plan_manual_partners -> confirm_manual_partner (mapped over no manual partner, so skipped);
all of them -> close_request. Every body returns a tiny value at once; nothing is imported.

**Trigger** with `{"n_targets": 3}`. Not part of the product: it lives in `bench/dags/` and is
only loaded when the benchmark points Airflow's dags folder at a folder that links it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Param, task

DEFAULT_TARGETS = 3  # recipients of a typical demo customer: a payment partner and two manufacturers

with DAG(
    dag_id="dsr_noop_erasure_shape",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["bench"],
    params={"n_targets": Param(DEFAULT_TARGETS, type="integer", minimum=0, title="Partners told")},
    doc_md=__doc__,
    max_active_tasks=8,
) as dag:

    @task
    def validate_request() -> dict:
        return {"verified": True}

    @task.branch
    def check_identity(started: dict) -> str:
        return "record_verification" if started["verified"] else "confirm_identity"

    @task
    def confirm_identity() -> dict:  # the ApprovalOperator of dsr_erasure; skipped by the branch
        return {"approved": True}

    @task
    def intake_wave() -> dict:  # a wave's intake; skipped for a single request
        return {}

    @task
    def report_erasure_plan() -> dict:  # the dry run; skipped
        return {}

    @task(trigger_rule="none_failed_min_one_success")
    def record_verification() -> dict:
        return {"verified": True}

    @task
    def resolve_subject() -> dict:
        return {"route": "proceed"}

    @task.branch
    def route_identity(resolved: dict) -> str:
        return "plan_erasure"

    @task
    def decide_identity() -> dict:  # the HITLOperator for conflicting identities; skipped
        return {}

    @task.branch
    def apply_identity_decision() -> list[str]:  # after ops decided a conflict; skipped with it
        return ["plan_erasure"]

    @task(trigger_rule="none_failed_min_one_success")
    def plan_erasure(**context) -> list[dict]:
        return [{"system": f"partner_{i}"} for i in range(int(context["params"]["n_targets"]))]

    @task
    def erase_platform() -> dict:
        return {"rows": 0}

    @task
    def erase_objects() -> dict:
        return {"objects": 0}

    @task
    def check_erasure() -> dict:
        return {"passed": True}

    @task(max_active_tis_per_dagrun=6)
    def tell_partner(target: dict) -> dict:
        return {"system": target["system"], "status": "confirmed"}

    @task
    def plan_manual_partners() -> list[str]:
        return []

    @task
    def confirm_manual_partner(body: str) -> dict:  # mapped over no manual partner
        return {}

    @task(trigger_rule="all_done")
    def close_request() -> dict:
        return {"status": "completed"}

    started = validate_request()
    branch = check_identity(started)
    verified = record_verification()
    confirm = confirm_identity()
    wave = intake_wave()
    branch >> [verified, confirm, wave, report_erasure_plan()]
    confirm >> verified
    resolved = resolve_subject()
    verified >> resolved
    routed = route_identity(resolved)
    decided = apply_identity_decision()
    routed >> decide_identity() >> decided
    partners = plan_erasure()
    [routed, decided, wave] >> partners
    checked = check_erasure()
    partners >> erase_platform() >> erase_objects() >> checked
    told = tell_partner.expand(target=partners)
    bodies = plan_manual_partners()
    partners >> bodies
    manual = confirm_manual_partner.expand(body=bodies)
    [checked, told, manual] >> close_request()
