"""No identity of a closed request left in the Airflow metadata DB or the task logs, through a
running Airflow: a request triggered over the REST API (which writes the conf into ``dag_run`` and
the audit ``log``), run by the scheduler, closed, then every table and every log file scanned.
A wave of erasures goes the same way (file in the exports bucket, REST trigger, scheduler and
triggerer), so erasure is not shown by ``dag.test()`` alone.

The scan is shown to work first: before the request closes, the identities are where the REST
trigger put them.
"""

from __future__ import annotations

import json

import pytest

from include import constants
from tests.e2e.conftest import rebuild_world
from tests.e2e.helpers import HARD, conf_for, ledger, people_without_manual_partner, upload_wave
from tests.e2e.pii_scan import scan_database, scan_files
from tests.e2e.stack import running_stack

pytestmark = pytest.mark.slow


def _needles(person_key: str) -> list[str]:
    person = HARD[person_key]
    return [person.email, person.email.lower(), person.phone, person.phone.lstrip("+"), person.full_name]


@pytest.fixture(scope="module", autouse=True)
def world_restored_afterwards(demo_world):
    yield
    rebuild_world(demo_world)  # the wave below erases two people


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


def test_rest_triggered_erasure_wave_runs_on_the_scheduler_and_leaves_no_identity(stack, demo_world, capsys):
    people = people_without_manual_partner(demo_world.paths)[1:3]
    wave_id = "E2E-STACK-WAVE"
    lines = [conf_for(key, f"E2E-STACK-ERASE-{key}", with_phone=True) for key in people]
    key = upload_wave(demo_world.s3, wave_id, lines)
    stack.api.trigger(constants.DAG_ERASURE, {"request_id": wave_id, "wave": key})
    runs = stack.api.find_runs(constants.DAG_ERASURE, wave_id)
    run = stack.wait_for_run(constants.DAG_ERASURE, runs[0]["dag_run_id"])
    assert run["state"] == "success"
    for line in lines:
        row = ledger().get_request(line["request_id"])
        assert row.status == "completed", (line["request_id"], row.status, row.outcome_summary)
        assert row.outcome in ("erased", "erased_with_holds")
    with pytest.raises(demo_world.s3.exceptions.NoSuchKey):  # the wave's file (identities) is gone
        demo_world.s3.get_object(Bucket=constants.EXPORTS_BUCKET, Key=key)
    needles = [n for person in people for n in _needles(person)]
    after = scan_database(f"sqlite:///{stack.metadata_db}", needles)
    logs = scan_files(stack.task_logs, needles)
    with capsys.disabled():
        print(
            f"\nerasure wave on the stack: {sum(after.values())} identity hits in {len(after)} tables, "
            f"{sum(logs.values())} in {len(logs)} task-log files"
        )
    assert {table: n for table, n in after.items() if n} == {}
    assert {path: n for path, n in logs.items() if n} == {}
    assert any("dsr_erasure" in str(path) for path in logs), "the erasure run's task logs were read"
