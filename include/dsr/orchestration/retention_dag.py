"""The shape of ``retention_enforcement``: plan -> (report_dry_run | purge -> [purge_metadata,
check_retention] -> record_run, which records what was purged even when a check failed). Task
bodies call :mod:`include.dsr.retention.run`; XCom carries counts, cutoffs and digests only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, task

from include import constants, settings
from include.dsr.orchestration.dag_factory import DEFAULT_ARGS, _runtime, form_param
from include.dsr.orchestration.errors import run_step


def build_retention_dag(doc_md: str) -> DAG:
    with DAG(
        dag_id=constants.DAG_RETENTION,
        schedule="30 2 * * *",
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        # Deletes for good: created paused, so ops turn it on once the data map's rules are signed off
        # (and a fresh deployment, the demo, or a test stack never purges on its first scheduler loop).
        is_paused_upon_creation=True,
        tags=["dsr", "gdpr", "retention", "art5"],
        params={"dry_run": form_param(False, type="boolean", title="Dry run", description="Report, touch nothing")},
        default_args={**DEFAULT_ARGS, "retries": 1, "retry_delay": timedelta(minutes=5)},
        doc_md=doc_md,
    ) as dag:

        @task
        def plan_retention() -> dict:
            from include.dsr.retention import run

            return run_step(
                lambda: run.plan(
                    _runtime(), after_days=settings.RETENTION_COPIES_AFTER_DAYS, batch=settings.RETENTION_BATCH_ROWS
                )
            )

        @task.branch
        def route(**context) -> str:
            return "report_dry_run" if context["params"]["dry_run"] else "purge"

        @task
        def report_dry_run(planned: dict, **context) -> int:
            from include.dsr.retention import run

            return run.record(_runtime(), planned, None, None, context["run_id"])

        @task
        def purge(planned: dict) -> dict:
            from include.dsr.retention import run

            now = datetime.fromisoformat(planned["now"])
            return run_step(
                lambda: run.apply(
                    _runtime(),
                    now,
                    after_days=settings.RETENTION_COPIES_AFTER_DAYS,
                    batch=settings.RETENTION_BATCH_ROWS,
                )
            )

        @task
        def purge_metadata() -> dict:
            """Identities of closed requests out of Airflow's metadata DB (run conf, audit log)."""
            from include.dsr.orchestration.metadata_purge import sweep_closed_requests

            return sweep_closed_requests(_runtime().ledger)

        @task
        def check_retention(planned: dict) -> dict:
            from include.dsr.retention import run

            return run_step(lambda: run.check(_runtime(), planned, batch=settings.RETENTION_BATCH_ROWS))

        # Runs whatever the checks and the metadata purge did: what was deleted is recorded, and
        # the run then fails with them (the dashboard shows the run, and that it failed its checks).
        @task(trigger_rule="all_done")
        def record_run(**context) -> int:
            from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

            from include.dsr.retention import run

            ti = context["ti"]
            planned, applied = ti.xcom_pull(task_ids="plan_retention"), ti.xcom_pull(task_ids="purge")
            if planned is None or applied is None:
                raise AirflowSkipException("nothing was purged (a dry run, or the purge failed before any batch)")
            checks = ti.xcom_pull(task_ids="check_retention")
            metadata = ti.xcom_pull(task_ids="purge_metadata")
            record = {**applied, "metadata_db": metadata if metadata is not None else "failed"}
            seq = run.record(
                _runtime(), planned, record, checks or {"failures": "the checks did not pass"}, context["run_id"]
            )
            if checks is None or metadata is None:
                raise AirflowFailException(
                    f"retention run recorded (event {seq}) but its checks or metadata purge failed"
                )
            return seq

        planned = plan_retention()
        routed = route()
        planned >> routed
        applied = purge(planned)
        routed >> [report_dry_run(planned), applied]
        metadata = purge_metadata()
        checks = check_retention(planned)
        applied >> [metadata, checks]
        [metadata, checks] >> record_run()
    return dag
