"""
### Benchmark Airflow DAG `dsr_noop_shape`: the task graph of `dsr_access`, with no-op bodies

Used by `bench/bench_e2e.py` to measure what Airflow itself costs per access request
(scheduling, executor hand-off, task process start-up) apart from the work in the task
bodies. The same tasks and edges as `dsr_access`, taking the path of a verified request:
validate_request -> check_identity (branch; confirm_identity, intake_wave and report_dry_run
skipped) -> record_verification -> resolve_subject -> route_identity (branch; decide_identity
and apply_identity_decision skipped) -> plan_fan_out -> mapped `gather` over `n_targets` targets
(same concurrency cap of 6 per run) + plan_manual_partners -> confirm_manual_partner (mapped
over no manual partner, so skipped) -> validate_results -> build_package -> close_request.
Every body returns a tiny dict at once; nothing is imported. (Until 2026-12-07 it lacked
route_identity and plan_fan_out, two hops of the chain that `dsr_access` has.)

**Trigger** with `{"n_targets": 8}` (default 8: a demo access request fans out to 5 internal
units and 3 partners). Not part of the product: it lives in `bench/dags/` and is only loaded
when the benchmark points Airflow's dags folder at a folder that links it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, Param, task

DEFAULT_TARGETS = 8  # fan-out of a demo access request (H01): 5 internal units + 3 partners

with DAG(
    dag_id="dsr_noop_shape",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["bench"],
    params={"n_targets": Param(DEFAULT_TARGETS, type="integer", minimum=0, title="Fan-out targets")},
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
    def confirm_identity() -> dict:  # the ApprovalOperator of dsr_access; skipped by the branch
        return {"approved": True}

    @task
    def intake_wave() -> dict:  # a wave's intake; skipped by the branch
        return {"lines": 0}

    @task
    def report_dry_run() -> dict:  # a dry run's report; skipped by the branch
        return {"dry_run": True}

    @task(trigger_rule="none_failed_min_one_success")
    def record_verification() -> dict:
        return {"verified": True}

    @task
    def resolve_subject() -> dict:
        return {"route": "proceed"}

    @task.branch
    def route_identity(resolved: dict) -> str:
        return "plan_fan_out" if resolved["route"] == "proceed" else "decide_identity"

    @task
    def decide_identity() -> dict:  # the HITLOperator of an identity conflict; skipped by the branch
        return {"chosen_options": []}

    @task.branch
    def apply_identity_decision() -> list[str]:
        return ["plan_fan_out"]

    @task(trigger_rule="none_failed_min_one_success")
    def plan_fan_out(**context) -> list[dict]:
        return [{"unit": i} for i in range(int(context["params"]["n_targets"]))]

    @task(max_active_tis_per_dagrun=6)
    def gather(target: dict) -> dict:
        return {"unit": target["unit"], "rows": 0}

    @task
    def plan_manual_partners() -> list[str]:
        return []  # a typical request has no manual partner

    @task
    def confirm_manual_partner(body: str) -> dict:  # the HITLOperator of dsr_access; mapped over []
        return {"record_count": 0}

    @task(trigger_rule="none_failed_min_one_success")
    def validate_results() -> dict:
        return {"units_checked": 0}

    @task
    def build_package() -> dict:
        return {"files": 0}

    @task
    def close_request() -> dict:
        return {"status": "completed"}

    started = validate_request()
    branch = check_identity(started)
    verified = record_verification()
    confirm = confirm_identity()
    wave = intake_wave()
    branch >> [verified, confirm, wave, report_dry_run()]
    confirm >> verified
    resolved = resolve_subject()
    verified >> resolved
    routed = route_identity(resolved)
    decided = apply_identity_decision()
    routed >> decide_identity() >> decided
    targets = plan_fan_out()
    [routed, decided, wave] >> targets
    gathered = gather.expand(target=targets)
    bodies = plan_manual_partners()
    targets >> bodies
    manual = confirm_manual_partner.expand(body=bodies)
    checked = validate_results()
    [gathered, manual] >> checked
    checked >> build_package() >> close_request()
