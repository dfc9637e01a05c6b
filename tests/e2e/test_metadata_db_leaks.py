"""No identity of a closed request left in the Airflow metadata DB or the task logs, through a
running Airflow: a request triggered over the REST API (which writes the conf into ``dag_run`` and
the audit ``log``), run by the scheduler, closed, then every table and every log file scanned.

The scan is shown to work first: before the request closes, the identities are where the REST
trigger put them.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.helpers import HARD, conf_for, ledger, people_without_manual_partner
from tests.e2e.pii_scan import scan_database, scan_files
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.slow


def _needles(person_key: str) -> list[str]:
    person = HARD[person_key]
    return [person.email, person.email.lower(), person.phone, person.phone.lstrip("+"), person.full_name]


@pytest.fixture(scope="module")
def stack(demo_world, tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def test_rest_triggered_request_leaves_no_identity_behind_once_closed(stack, demo_world, capsys):
    person_key = people_without_manual_partner(demo_world.paths)[0]
    request_id = f"E2E-LEAK-REST-{person_key}"
    conf = conf_for(
        person_key,
        request_id,
        with_phone=True,
        verification={"method": "ops_confirmed", "verified_at": "2026-11-20T10:00:00Z"},
    )
    stack.api.trigger("dsr_access", conf)
    needles = _needles(person_key)
    db = f"sqlite:///{stack.metadata_db}"
    before = scan_database(db, needles)
    assert before["dag_run"] >= 1, "the scan finds the conf the REST trigger stored"
    assert before["log"] >= 1, "the scan finds the audit-log row of the trigger"
    runs = stack.api.find_runs("dsr_access", request_id)
    run = stack.wait_for_run("dsr_access", runs[0]["dag_run_id"])
    assert run["state"] == "success"
    assert ledger().get_request(request_id).closed_at is not None
    after = scan_database(db, needles)
    logs = scan_files(stack.task_logs, needles)
    with capsys.disabled():
        print(
            "\nPII scan of the metadata DB before the request closed:",
            json.dumps({k: v for k, v in before.items() if v}),
        )
        print(
            f"PII scan after: {sum(after.values())} rows in {len(after)} tables; {sum(logs.values())} hits in "
            f"{len(logs)} task-log files"
        )
    assert {table: n for table, n in after.items() if n} == {}
    assert {path: n for path, n in logs.items() if n} == {}
    assert len(after) > 30  # every table was read (Airflow 3.3 has ~50)
    assert logs, "the task logs were found and read"
