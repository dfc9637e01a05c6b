"""
### SLA monitor: Airflow DAG `dsr_sla_monitor`

Every hour, recomputes the status of every open data-subject request from the request
ledger: the deadline in force (GDPR: one month, three when extended with notice; CCPA: 45
days, +45; moved by identity-verification pauses that count), the days left, and the
partners that still owe a reply.

- `alert_ops`: one mail to ops (Airflow Variable `dsr_ops_email`) per request that is
  **at risk** (fewer than `dsr_at_risk_days` days left, default 7) and one per request that
  is **breached**, per deadline in force. Each alert is recorded in the ledger with a
  dedupe key, so re-runs never send it twice.
- `publish_snapshot`: writes the figures for the compliance dashboard to
  `s3://fabconnect-dsr-exports/_dashboard/sla.json` (ids, dates and counts only).
- `purge_metadata`: removes the identities of closed requests (and of runs that never became a
  request) from the Airflow metadata DB, `DSR_METADATA_PURGE_AFTER_DAYS` after they closed.

No personal data is read: the ledger knows subjects by fingerprint only.
"""

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

from include import settings
from include.dsr.orchestration.errors import run_step


@dag(
    dag_id="dsr_sla_monitor",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["dsr", "gdpr", "sla"],
    default_args={
        "owner": "privacy-ops",
        "retries": settings.TASK_RETRIES,
        "retry_delay": timedelta(seconds=settings.TASK_RETRY_DELAY_SECONDS),
        "retry_exponential_backoff": True,
    },
    doc_md=__doc__,
)
def dsr_sla_monitor():
    @task
    def alert_ops() -> dict[str, int]:
        from include.dsr.orchestration import sla_monitor

        return run_step(sla_monitor.alert_open_requests)

    @task
    def publish_snapshot() -> str:
        from include.dsr.orchestration import sla_monitor

        return run_step(sla_monitor.publish_figures)

    @task
    def purge_metadata() -> dict[str, int]:
        from include.dsr.orchestration import sla_monitor

        return run_step(sla_monitor.purge_closed_requests)

    alert_ops() >> publish_snapshot() >> purge_metadata()


dsr_sla_monitor()
