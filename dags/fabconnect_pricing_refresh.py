"""
### Fabconnect pricing: nightly refresh of pricing features (a demo of a downstream job)

Recomputes every customer's pricing features from their quotes, except for subjects whose data may
not be used for pricing (the DSR restriction registry): their stored rows are left as they are,
since a restriction allows storage and nothing else.
"""

from datetime import UTC, datetime

from airflow.sdk import DAG, task

with DAG(
    dag_id="fabconnect_pricing_refresh",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["fabconnect", "pricing", "demo"],
    doc_md=__doc__,
    max_active_runs=1,
    is_paused_upon_creation=True,  # a demo of a team's job: it changes the demo world, so it runs when unpaused
) as dag:

    @task
    def refresh_pricing_features() -> dict:
        from include import constants
        from include.demo.downstream import refresh_pricing_features
        from include.dsr.connections import engine_for

        return refresh_pricing_features(engine_for(constants.CONN_APP_DB))

    refresh_pricing_features()
