"""
### Fabconnect marketing: the daily newsletter (a demo of a downstream job)

Sends the day's newsletter to everyone who opted in, minus the suppression list, minus every
subject whose data may not be used for marketing (the DSR restriction registry: restricted,
objected, consent withdrawn). Runs daily at 09:00 Berlin time, and again whenever the registry
changes (Asset `dsr_processing_restrictions`): the campaign is the day's, so a second run sends
only to people the first did not reach (a restriction lifted since), never twice to anyone.
"""

from datetime import UTC, datetime

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, task

from include.dsr.orchestration.assets import RESTRICTIONS

with DAG(
    dag_id="fabconnect_marketing_send",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 9 * * *", timezone="Europe/Berlin"), assets=[RESTRICTIONS]
    ),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["fabconnect", "marketing", "demo"],
    doc_md=__doc__,
    max_active_runs=1,
    is_paused_upon_creation=True,  # a demo of a team's job: it changes the demo world, so it runs when unpaused
) as dag:

    @task
    def send_newsletter() -> dict:
        from include import constants
        from include.demo.downstream import daily_campaign, send_newsletter
        from include.dsr.connections import engine_for, secret

        # One campaign per Berlin day: a run the Asset triggers later that day sends only to whom
        # the morning's run did not reach, never twice to anyone.
        return send_newsletter(engine_for(constants.CONN_APP_DB), secret("erasure_hash"), daily_campaign())

    send_newsletter()
