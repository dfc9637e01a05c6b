"""Faults a production Airflow sees, on a running stack (scheduler, dag-processor, triggerer,
api-server), not ``dag.test()``: each run ends done after recovery, the ledger chain verifies,
and the re-runs Airflow makes duplicate no side effect (one package, one event of each kind).

* the scheduler SIGKILLed mid-run (its LocalExecutor workers die with it) and started again:
  the orphaned task is found by its missed heartbeats and retried;
* the object store down (every connection reset, through :class:`tests.support.TcpProxy`) while the package
  is written, and while an erasure deletes objects: the tasks fail, are retried, and finish once
  it is back;
* the ledger's PostgreSQL unreachable for a while mid-request: the same;
* the platform DB (the world built in a PostgreSQL schema for this module, reached through its
  own proxy) dropping every connection while ``erase_platform`` deletes: the task fails, is
  retried, and the read-back check finds nothing of the subject left.

Every outcome is printed as one table row (``-s`` shows them; CI logs them).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter

import pytest
from sqlalchemy.engine import make_url

from include import constants, settings
from include.demo.airflow_env import demo_connections
from include.dsr.ledger.api import Ledger
from tests.e2e.conftest import rebuild_world
from tests.e2e.helpers import customers_of_automated_partners, email_conf
from tests.e2e.stack import Stack, running_stack
from tests.support import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

POSTGRES_URL = os.environ.get("DSR_TEST_POSTGRES_URL")
LEDGER_SCHEMA = "dsr_fault_ledger"
PLATFORM_SCHEMA = "dsr_fault_platform"
OUTCOMES: list[tuple[str, str]] = []


def _s3_through(proxy: TcpProxy) -> str:
    conn = demo_connections()[constants.CONN_S3]
    extra = dict(conn["extra"])
    extra["endpoint_url"] = f"http://127.0.0.1:{proxy.port}"
    return json.dumps({**conn, "extra": extra})


def _schema_url(schema: str, port: int | None = None) -> str:
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    return (url.set(port=port) if port else url).render_as_string(hide_password=False)


def _ledger_url(port: int | None = None) -> str:
    return _schema_url(LEDGER_SCHEMA, port)


def _postgres_conn(url: str) -> str:
    return json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "extra": {"sqlalchemy_url": url}})


@pytest.fixture(scope="module")
def proxies():
    if not POSTGRES_URL:
        pytest.skip("DSR_TEST_POSTGRES_URL is not set")
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        for schema in (LEDGER_SCHEMA, PLATFORM_SCHEMA):
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
    admin.dispose()
    Ledger(_ledger_url()).create_schema()
    pg_port = make_url(POSTGRES_URL).port or 5432
    found = {"s3": TcpProxy(settings.S3_PORT), "ledger": TcpProxy(pg_port), "platform": TcpProxy(pg_port)}
    yield found
    for proxy in found.values():
        proxy.stop()


@pytest.fixture(scope="module")
def stack(demo_world, proxies, tmp_path_factory):
    # The platform DB in PostgreSQL for this module (same seed, same people), so that its
    # connections can be dropped; the SQLite world is built again afterwards.
    rebuild_world(demo_world, app_url=_schema_url(PLATFORM_SCHEMA))
    extra_env = {
        f"AIRFLOW_CONN_{constants.CONN_S3.upper()}": _s3_through(proxies["s3"]),
        f"AIRFLOW_CONN_{constants.CONN_LEDGER.upper()}": _postgres_conn(_ledger_url(proxies["ledger"].port)),
        f"AIRFLOW_CONN_{constants.CONN_APP_DB.upper()}": _postgres_conn(
            _schema_url(PLATFORM_SCHEMA, proxies["platform"].port)
        ),
        "DSR_TASK_RETRY_DELAY_SECONDS": "3",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    }
    with running_stack(tmp_path_factory.mktemp("faults"), extra_env=extra_env) as running:
        yield running
    rebuild_world(demo_world)  # the SQLite world again, as the modules after this one expect it
    if OUTCOMES:
        print("\n" + "fault".ljust(64) + "outcome")
        for fault, outcome in OUTCOMES:
            print(f"{fault:<64}{outcome}")


@pytest.fixture(scope="module")
def subjects(demo_world) -> list[tuple[str, str]]:
    return [(k, e) for k, e, _ in customers_of_automated_partners(demo_world.paths)][20:30]


def _ledger() -> Ledger:
    return Ledger(_ledger_url())


def _tis(stack: Stack, dag_id: str, run_id: str) -> dict[str, dict]:
    """Task instances by ``task_id`` (``task_id[i]`` for a mapped one)."""
    return {
        f"{t['task_id']}[{t['map_index']}]" if t["map_index"] >= 0 else t["task_id"]: t
        for t in stack.api.task_instances(dag_id, run_id)
    }


def _wait_for_task(stack: Stack, dag_id: str, run_id: str, task_id: str, states: set, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ti = _tis(stack, dag_id, run_id).get(task_id)
        if ti and ti["state"] in states:
            return ti
        time.sleep(0.2)
    raise TimeoutError(f"{task_id} of {run_id} never reached {states}")


def _cut_while(stack: Stack, proxy: TcpProxy, dag_id: str, run_id: str, task_id: str) -> None:
    """Cut ``proxy`` as ``task_id`` starts, until the task has failed and waits for its retry."""
    _wait_for_task(stack, dag_id, run_id, task_id, {"scheduled", "queued", "running"})
    proxy.cut()
    try:
        _wait_for_task(stack, dag_id, run_id, task_id, {"up_for_retry"}, timeout=180)
    finally:
        proxy.restore()


def _no_duplicates(request_id: str) -> Counter:
    """Each event once per system it concerns (status changes may repeat); one notice of each kind."""
    found = _ledger().events(request_id)
    per_system = Counter((e.event_type, str(e.payload.get("system", ""))) for e in found)
    repeatable = {"request.status_changed", "notice.sent"}
    duplicated = {key: n for key, n in per_system.items() if n > 1 and key[0] not in repeatable}
    assert not duplicated, f"{request_id}: events recorded more than once: {duplicated}"
    notices = Counter(
        str(e.payload.get("kind") or e.payload.get("notice")) for e in found if e.event_type == "notice.sent"
    )
    assert all(n == 1 for n in notices.values()), f"{request_id}: a notice was sent twice: {notices}"
    return Counter(e.event_type for e in found)


def _retries(stack: Stack, dag_id: str, run_id: str) -> int:
    return sum(max(0, (t["try_number"] or 0) - 1) for t in _tis(stack, dag_id, run_id).values())


def _record(fault: str, request_id: str, run: dict, retried: int) -> None:
    row = _ledger().get_request(request_id)
    OUTCOMES.append((fault, f"run {run['state']}, request {row.status}, {retried} task retries, chain verifies"))


def test_the_scheduler_killed_mid_run_is_restarted_and_the_request_completes(stack, subjects):
    _, email = subjects[0]
    request_id = "E2E-FAULT-SCHED"
    run_id = stack.api.trigger(constants.DAG_ACCESS, email_conf(request_id, email))
    _wait_for_task(stack, constants.DAG_ACCESS, run_id, "resolve_subject", {"running"})
    stack.group.kill("scheduler")
    time.sleep(5)
    stack.group.restart("scheduler")
    run = stack.wait_for_run(constants.DAG_ACCESS, run_id, timeout=600)
    assert run["state"] == "success"
    retried = _retries(stack, constants.DAG_ACCESS, run_id)
    assert _ledger().get_request(request_id).status == "completed"
    assert _no_duplicates(request_id)["package.created"] == 1
    assert _ledger().verify_chain().ok
    _record("scheduler SIGKILLed mid-task, restarted 5 s later", request_id, run, retried)


@pytest.mark.parametrize(
    ("fault", "dag_id", "task_id", "server", "index"),
    [
        pytest.param(
            "object store down while build_package writes",
            constants.DAG_ACCESS,
            "build_package",
            "s3",
            1,
            id="object store down during the package",
        ),
        pytest.param(
            "object store down while erase_objects deletes",
            constants.DAG_ERASURE,
            "erase_objects",
            "s3",
            2,
            id="object store down during an erasure",
        ),
        pytest.param(
            "platform DB connections dropped while erase_platform deletes",
            constants.DAG_ERASURE,
            "erase_platform",
            "platform",
            4,
            id="platform DB dropped during an erasure",
        ),
        pytest.param(
            "ledger PostgreSQL unreachable at plan_fan_out",
            constants.DAG_ACCESS,
            "plan_fan_out",
            "ledger",
            3,
            id="ledger unreachable",
        ),
    ],
)
def test_a_server_down_mid_task_is_survived(stack, proxies, subjects, fault, dag_id, task_id, server, index):
    _, email = subjects[index]
    request_id = f"E2E-FAULT-{task_id.upper().replace('_', '-')}"
    run_id = stack.api.trigger(dag_id, email_conf(request_id, email))
    _cut_while(stack, proxies[server], dag_id, run_id, task_id)
    run = stack.wait_for_run(dag_id, run_id, timeout=900)
    assert run["state"] == "success"
    assert _ledger().get_request(request_id).status == "completed"
    events = _no_duplicates(request_id)
    if dag_id == constants.DAG_ACCESS:
        assert events["package.created"] == 1
    if server == "platform":  # the retry did the erasure (the cut attempt committed nothing)
        platform = next(r for r in _ledger().system_results(request_id) if r.system == constants.CONN_APP_DB)
        assert (platform.status, platform.record_count > 0) == ("completed", True), platform
    assert _ledger().verify_chain().ok
    _record(fault, request_id, run, _retries(stack, dag_id, run_id))
