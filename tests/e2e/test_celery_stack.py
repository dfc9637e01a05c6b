"""The end-to-end core on the CeleryExecutor stack of ``make stack``, not on ``dag.test()``.

A PostgreSQL metadata DB (a throw-away database on the server of ``DSR_TEST_POSTGRES_URL``),
the Redis broker, two Celery workers (default queue; fan-out and default queue), the scheduler,
dag-processor, triggerer and api-server, all started as ``make stack`` starts them:

* one REST-triggered run of every right DAG, all at once, each closing its request; the fan-out
  tasks ran on the fan-out queue, the rest on the default queue, and both workers worked;
* an access wave (eight requests in one file, one REST trigger): one package per request holding
  that subject's rows and nobody else's, every request completed, the wave's file gone, each
  acknowledgement and completion recorded and delivered once (a chunk of eight goes out over
  several SMTP connections from the task's process);
* partner faults: a partner failing twice is retried and the request completes; a partner that
  lies fails the check, naming the partner;
* the leak scan: once the requests closed, no identity in any table of the PostgreSQL metadata
  DB or in any task-log file; the ledger's hash chain verifies;
* a Celery worker SIGKILLed mid-task (its partner call stalled) and started again: the scheduler
  finds the task by its missed heartbeats, it is retried, and the request completes once, with
  one package and the ledger chain intact.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
import sqlalchemy as sa

from include import constants
from include.demo.partners.faults import Faults
from include.demo.smtp_sink import read_mail
from include.dsr.notify.mail import SEND_SIDE_BY_SIDE_FROM
from tests.e2e.conftest import rebuild_world
from tests.e2e.helpers import (
    VERIFIED,
    conf_for,
    customers_of_automated_partners,
    ledger,
    package_file,
    upload_wave,
)
from tests.e2e.pii_scan import scan_database, scan_files
from tests.e2e.stack import running_celery_stack

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

RUN_TIMEOUT = 900
RIGHT_DAGS = (
    constants.DAG_ACCESS,
    constants.DAG_PORTABILITY,
    constants.DAG_ERASURE,
    constants.DAG_RESTRICTION,
    constants.DAG_RECTIFICATION,
    constants.DAG_OBJECTION,
)
FANOUT_TASKS = {"gather", "tell_partner"}


@pytest.fixture(scope="module", autouse=True)
def world_restored_afterwards(demo_world):
    yield
    rebuild_world(demo_world)  # erasure, restriction, rectification and objection change it


@pytest.fixture(scope="module")
def stack(demo_world, tmp_path_factory):
    postgres = os.environ.get("DSR_TEST_POSTGRES_URL")
    if not postgres:
        pytest.skip("DSR_TEST_POSTGRES_URL is not set: the Celery stack needs a PostgreSQL metadata DB")
    with running_celery_stack(tmp_path_factory.mktemp("celery-stack"), postgres) as running:
        yield running


@pytest.fixture(scope="module")
def customers(demo_world) -> list[tuple[str, str]]:
    """Ordinary customers whose data went to automated partners only, with payflow among them."""
    found = [(key, email) for key, email, _ in customers_of_automated_partners(demo_world.paths)]
    assert len(found) >= 8, "the demo world has too few customers served by automated partners only"
    return found


def _conf(email: str, request_id: str, **extra) -> dict:
    return {"request_id": request_id, "subject": {"email": email}, "verification": VERIFIED, **extra}


def _finish(stack, dag_id: str, run_id: str) -> dict:
    return stack.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)


def _received_by(stack, worker: str) -> int:
    """How many task workloads a worker took from the broker, from its own log."""
    text = (stack.process_logs / f"{worker}.log").read_text(errors="replace")
    return len(re.findall(r"Task execute_workload\[[^\]]+\] received", text))


def test_every_right_runs_on_the_celery_workers_and_leaves_no_identity(stack, demo_world, customers, capsys):
    emails = dict(customers)
    keys = [key for key, _ in customers]
    confs = {
        constants.DAG_ACCESS: _conf(emails[keys[0]], "E2E-CELERY-ACCESS"),
        constants.DAG_PORTABILITY: _conf(emails[keys[1]], "E2E-CELERY-PORT"),
        constants.DAG_ERASURE: _conf(emails[keys[2]], "E2E-CELERY-ERASE"),
        constants.DAG_RESTRICTION: _conf(emails[keys[3]], "E2E-CELERY-RESTRICT", action="apply"),
        constants.DAG_RECTIFICATION: _conf(
            emails[keys[4]],
            "E2E-CELERY-RECTIFY",
            corrections=[{"field": "accounts.email", "value": f"fixed.{keys[4]}@example.org"}],
        ),
        constants.DAG_OBJECTION: _conf(
            emails[keys[5]], "E2E-CELERY-OBJECT", purposes=["marketing"], grounds="no newsletters"
        ),
    }
    started = time.monotonic()
    runs = {dag_id: stack.api.trigger(dag_id, conf) for dag_id, conf in confs.items()}
    finished = {dag_id: _finish(stack, dag_id, run_id) for dag_id, run_id in runs.items()}
    wall = time.monotonic() - started
    assert {dag_id: run["state"] for dag_id, run in finished.items()} == dict.fromkeys(RIGHT_DAGS, "success")
    for conf in confs.values():
        request = ledger().get_request(conf["request_id"])
        assert request.status == "completed", (conf["request_id"], request.outcome_summary)
        assert request.closed_at is not None

    engine = sa.create_engine(stack.metadata_url)
    with engine.connect() as conn:
        queues = conn.execute(
            sa.text(
                "SELECT task_id, queue, count(*) FROM task_instance WHERE dag_id = ANY(:dags) AND state = 'success' "
                "GROUP BY task_id, queue"
            ),
            {"dags": list(RIGHT_DAGS)},
        ).all()
    assert {task for task, queue, _ in queues if queue == "fanout"} == FANOUT_TASKS
    assert {queue for task, queue, _ in queues if task not in FANOUT_TASKS} == {"default"}
    fanout_runs = sum(n for task, queue, n in queues if queue == "fanout")
    assert _received_by(stack, "worker-fanout") >= fanout_runs  # only it consumes the fan-out queue
    assert _received_by(stack, "worker-default") > 0

    needles = []
    for conf in confs.values():
        needles.append(conf["subject"]["email"])
    needles += [c["value"] for c in confs[constants.DAG_RECTIFICATION]["corrections"]]
    tables = scan_database(stack.metadata_url, needles)
    logs = scan_files(stack.task_logs, needles)
    engine.dispose()
    with capsys.disabled():
        print(
            f"\nCelery stack up in {stack.started_in:.0f} s; six right DAGs at once in {wall:.0f} s; "
            f"{fanout_runs} fan-out tasks on worker-fanout, {_received_by(stack, 'worker-default')} workloads on "
            f"worker-default; identity hits: {sum(tables.values())} in {len(tables)} tables, "
            f"{sum(logs.values())} in {len(logs)} task-log files"
        )
    assert {table: n for table, n in tables.items() if n} == {}
    assert {path: n for path, n in logs.items() if n} == {}
    assert len(tables) > 30
    assert logs
    assert ledger().verify_chain().ok


def test_an_access_wave_runs_on_the_celery_workers_one_package_per_request(stack, demo_world, customers, capsys):
    # not those the test above erased, restricted or rectified; as many as make a chunk's notices go
    # out over several SMTP connections from the Celery task's process
    members = customers[6 : 6 + SEND_SIDE_BY_SIDE_FROM]
    assert len(members) == SEND_SIDE_BY_SIDE_FROM
    lines = [_conf(email, f"E2E-CELERY-AWAVE-{i}") for i, (_, email) in enumerate(members)]
    wave_file = upload_wave(demo_world.s3, "E2E-CELERY-AWAVE", lines)
    started = time.monotonic()
    run_id = stack.api.trigger(constants.DAG_ACCESS, {"request_id": "E2E-CELERY-AWAVE", "wave": wave_file})
    assert _finish(stack, constants.DAG_ACCESS, run_id)["state"] == "success"
    wall = time.monotonic() - started
    emails = [email for _, email in members]
    for line, email in zip(lines, emails, strict=True):
        rid = line["request_id"]
        request = ledger().get_request(rid)
        assert request.status == "completed", (rid, request.outcome_summary)
        assert request.package_url_expires_at is not None
        assert [e.event_type for e in ledger().events(rid)].count("package.created") == 1
        data = package_file(demo_world.s3, rid, "data.json")
        text = data.decode().lower()
        assert email.lower() in text  # the subject's own rows ...
        assert not [other for other in emails if other != email and other.lower() in text]  # ... and only theirs
        manifest = json.loads(
            demo_world.s3.get_object(Bucket=constants.EXPORTS_BUCKET, Key=f"{rid}/manifest.json")["Body"].read()
        )
        assert manifest["request_id"] == rid
        assert manifest["record_count_total"] > 0
    with pytest.raises(demo_world.s3.exceptions.NoSuchKey):  # the wave's file (identities) is gone
        demo_world.s3.get_object(Bucket=constants.EXPORTS_BUCKET, Key=wave_file)
    # each request's acknowledgement and completion: recorded once each, and delivered once each
    notices = [e for line in lines for e in ledger().events(line["request_id"]) if e.event_type == "notice.sent"]
    assert sorted(e.payload["kind"] for e in notices) == sorted(["acknowledgement", "completion"] * len(lines))
    delivered = [m["Message-ID"] for m in read_mail()]
    for event in notices:
        assert delivered.count(f"<{event.payload['message_id']}@dsr.fabconnect.example>") == 1
    tables = scan_database(stack.metadata_url, emails)
    with capsys.disabled():
        print(
            f"\naccess wave of {len(lines)} on the Celery stack in {wall:.0f} s; identity hits {sum(tables.values())}"
        )
    assert {table: n for table, n in tables.items() if n} == {}
    assert ledger().verify_chain().ok


def test_partner_faults_on_the_stack_end_as_documented(stack, demo_world, healthy_partners):
    healthy_partners["payflow"].faults = Faults(mode="fail", fail_count=2)
    retried = stack.api.trigger(constants.DAG_ACCESS, conf_for("H01", "E2E-CELERY-FAIL"))
    assert _finish(stack, constants.DAG_ACCESS, retried)["state"] == "success"
    row = next(r for r in ledger().system_results("E2E-CELERY-FAIL") if r.system == "payflow")
    assert row.status == "completed"

    healthy_partners["payflow"].faults = Faults(mode="lie")
    lied = stack.api.trigger(constants.DAG_ACCESS, conf_for("H02", "E2E-CELERY-LIE"))
    assert _finish(stack, constants.DAG_ACCESS, lied)["state"] == "failed"
    summary = ledger().get_request("E2E-CELERY-LIE").outcome_summary
    assert "payflow" in summary
    assert "do not belong to the subject" in summary
    assert ledger().verify_chain().ok


def test_a_worker_killed_mid_task_is_replaced_and_the_request_completes(stack, demo_world, healthy_partners, capsys):
    healthy_partners["payflow"].faults = Faults(mode="stall", stall_seconds=8)  # under the 10 s client timeout
    request_id = "E2E-CELERY-WORKER-KILL"
    run_id = stack.api.trigger(constants.DAG_ACCESS, conf_for("H01", request_id))
    deadline = time.monotonic() + 300
    while not (payflow := _payflow_gather(stack, run_id)) or payflow["state"] != "running":
        assert time.monotonic() < deadline, "payflow's gather never started on the fan-out worker"
        time.sleep(0.5)
    time.sleep(3)  # inside payflow's stalled call: the task cannot have finished
    stack.group.kill("worker-fanout")  # SIGKILL to the worker and the task processes it forked
    healthy_partners["payflow"].faults = Faults()
    time.sleep(3)
    stack.group.restart("worker-fanout")
    run = _finish(stack, constants.DAG_ACCESS, run_id)
    assert run["state"] == "success"
    tries = {t["rendered_map_index"]: t["try_number"] for t in _tis(stack, run_id) if t["task_id"] == "gather"}
    assert _payflow_gather(stack, run_id)["try_number"] >= 2, tries  # the killed task ran again
    request = ledger().get_request(request_id)
    assert request.status == "completed", request.outcome_summary
    events = [e.event_type for e in ledger().events(request_id)]
    assert events.count("package.created") == 1
    assert events.count("request.closed") == 1
    assert ledger().verify_chain().ok
    with capsys.disabled():
        print(f"\nworker-fanout SIGKILLed inside payflow's gather: gather tries after recovery {tries}")


def _tis(stack, run_id: str) -> list[dict]:
    return stack.api.task_instances(constants.DAG_ACCESS, run_id)


def _payflow_gather(stack, run_id: str) -> dict | None:
    return next(
        (t for t in _tis(stack, run_id) if t["task_id"] == "gather" and t.get("rendered_map_index") == "payflow"),
        None,
    )
