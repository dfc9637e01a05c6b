"""Submit one sample access and one portability request through Airflow's REST API v2.

Used by ``make demo`` once Airflow is up, so a newcomer sees the product work: it unpauses
the two DAGs, triggers a run of each for demo subjects (hard cases whose data never went
to a manual-channel partner, so no human input is needed), waits for the outcome and
prints where each package is. The presigned link itself stays in the ledger. The API
client is :class:`include.dsr.cli.airflow_api.AirflowApi`, shared with the ``dsr`` CLI.
"""

from __future__ import annotations

import sqlite3
import time

from include import constants, settings
from include.demo.people import hard_case_people
from include.dsr.cli.airflow_api import AirflowApi

RUN_TIMEOUT_SECONDS = 600
FINISHED = {"success", "failed"}


def demo_subjects(count: int = 2) -> list[str]:
    """Hard-case people with partner data but none at a manual-channel partner."""
    from include.demo.generator import PARTNERS

    manual = {p.slug for p in PARTNERS if p.channel == "manual"}
    truth = sqlite3.connect(settings.DEMO_DIR / "ground_truth.sqlite")
    chosen = []
    for person in hard_case_people():
        holders = {
            r[0] for r in truth.execute("SELECT DISTINCT system FROM owned_rows WHERE person_key=?", (person.key,))
        }
        if holders & {p.slug for p in PARTNERS} and not holders & manual:
            chosen.append(person.key)
    return chosen[:count]


def run_sample_requests(base_url: str, username: str, password: str) -> None:
    api = AirflowApi(base_url, username, password)
    people = {p.key: p for p in hard_case_people()}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = []
    for dag_id, person_key in zip((constants.DAG_ACCESS, constants.DAG_PORTABILITY), demo_subjects(), strict=True):
        api.wait_for_dag(dag_id)
        request_id = f"DEMO-{dag_id.split('_')[1].upper()}-{stamp}"
        conf = {
            "request_id": request_id,
            "subject": {"email": people[person_key].email},
            "verification": {
                "method": "logged_in_session",
                "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        }
        runs.append((dag_id, request_id, person_key, api.trigger(dag_id, conf)))
        print(f"triggered {dag_id} for demo subject {person_key} as request {request_id}", flush=True)
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    pending = list(runs)
    while pending and time.monotonic() < deadline:
        for run in list(pending):
            dag_id, request_id, _, run_id = run
            state = api.run_state(dag_id, run_id)
            if state in FINISHED:
                pending.remove(run)
                where = f"s3://{constants.EXPORTS_BUCKET}/{request_id}/ (endpoint http://127.0.0.1:{settings.S3_PORT})"
                print(
                    f"{dag_id} {request_id}: {state}"
                    + (f"; package at {where}" if state == "success" else "; see the run in the UI and the ledger"),
                    flush=True,
                )
        time.sleep(3)
    for dag_id, request_id, _, _ in pending:
        print(f"{dag_id} {request_id}: still running after {RUN_TIMEOUT_SECONDS}s; follow it in the UI", flush=True)
