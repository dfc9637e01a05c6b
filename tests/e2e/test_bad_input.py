"""Malformed and hostile confs (``tests/bad_confs.py``) through a running Airflow and through
``dsr submit --conf``: each refused before anything is touched, with a message naming the field.

Through REST, the api-server refuses what the DAG's Params can say (HTTP 400, no run is
created); the rest becomes a run whose ``validate_request`` fails it, with every other task
left unrun, no ledger row, no staged object, and the field named in the task's log. The CLI
refuses every case before sending (exit 2, nothing in Airflow), except a request id the
ledger holds for someone else, which it cannot know: that run is refused like the REST one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from include import constants, settings
from include.demo.airflow_env import DEMO_PASSWORD, DEMO_USER
from include.dsr.cli import context
from include.dsr.cli.airflow_api import AirflowApiError
from include.dsr.cli.app import main
from include.dsr.core.fingerprint import subject_fingerprint
from tests.bad_confs import CASES, DECLARED_RECEIVER, EMAIL, OTHER_EMAIL, REUSED_REQUEST_ID, BadConf
from tests.e2e.helpers import ledger
from tests.e2e.stack import Stack, running_stack

pytestmark = pytest.mark.slow

RIGHTS = sorted({case.right for case in CASES})


@pytest.fixture(scope="module")
def stack(demo_world, tmp_path_factory):
    receivers = {"DSR_RECEIVING_CONTROLLERS": DECLARED_RECEIVER}
    # 46 runs at once on SQLite: a scheduler ended by "database is locked" is started again
    with running_stack(tmp_path_factory.mktemp("bad-input"), extra_env=receivers, restart_exited=True) as running:
        for right in RIGHTS:  # the stack waited until they were parsed
            running.api._request("PATCH", f"/api/v2/dags/dsr_{right}", {"is_paused": False})
        yield running


@pytest.fixture(scope="module")
def reused_request(stack) -> dict:
    """The ledger holds ``REUSED_REQUEST_ID`` for another subject; returns that row's fields."""
    received = datetime.now(UTC) - timedelta(days=2)
    book = ledger()
    book.create_schema()  # as the first run would (this module may run first)
    row = book.record_request(
        REUSED_REQUEST_ID,
        "access",
        "GDPR",
        subject_fingerprint({"email": OTHER_EMAIL}, settings.DEMO_FINGERPRINT_SECRET),
        received,
        received + timedelta(days=30),
    )
    return {"status": row.status, "fingerprint": row.subject_fingerprint, "events": _events(REUSED_REQUEST_ID)}


def _events(request_id: str) -> int:
    return len(ledger().events(request_id))


def _task_log(stack: Stack, dag_id: str, run_id: str, task_id: str) -> str:
    folder = stack.task_logs / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    return "\n".join(path.read_text(errors="replace") for path in sorted(folder.rglob("*.log")))


def _staged(demo_world, request_id: object) -> int:
    if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > 200:
        return 0
    found = demo_world.s3.list_objects_v2(Bucket=constants.EXPORTS_BUCKET, Prefix=f"{request_id}/")
    return found.get("KeyCount", 0)


def _trigger(stack: Stack, case: BadConf, run_id: str) -> AirflowApiError | None:
    """The api-server's refusal of the trigger, or None when it created the run."""
    try:
        stack.api.trigger_run(f"dsr_{case.right}", case.conf, run_id=run_id)
    except AirflowApiError as exc:
        return exc
    return None


def test_bad_confs_through_rest_are_refused_naming_the_field(stack, demo_world, reused_request, capsys):
    outcomes: dict[str, str] = {}
    runs: dict[str, tuple[BadConf, str]] = {}
    for case in CASES:
        run_id = f"bad__{case.name}"
        refusal = _trigger(stack, case, run_id)
        if refusal is not None:
            assert refusal.status == 400, f"{case.name}: {refusal}"
            assert case.field in str(refusal), f"{case.name}: the 400 does not name {case.field}: {refusal}"
            outcomes[case.name] = "HTTP 400"
            continue
        assert case.refused_by == "run", f"{case.name}: the api-server accepted what its Params should refuse"
        runs[case.name] = (case, run_id)
    assert {name for name, c in ((c.name, c) for c in CASES) if c.refused_by == "api"} == set(outcomes)

    for name, (case, run_id) in runs.items():
        dag_id = f"dsr_{case.right}"
        run = stack.wait_for_run(dag_id, run_id, timeout=300)
        states = {ti["task_id"]: ti["state"] for ti in stack.api.task_instances(dag_id, run_id)}
        assert run["state"] == "failed", f"{name}: {run['state']}"
        assert states.pop("validate_request") == "failed", name
        ran = {task: state for task, state in states.items() if state in ("success", "failed", "running")}
        assert ran == {}, f"{name}: tasks ran after the refusal: {ran}"
        text = _task_log(stack, dag_id, run_id, "validate_request")
        assert case.field in text, f"{name}: the log of validate_request does not name {case.field}"
        assert case.reason in text, f"{name}: refused, but not because {case.reason!r}"
        assert EMAIL not in text
        outcomes[name] = "run failed at validate_request"

    for case in CASES:
        request_id = case.conf.get("request_id")
        if request_id == REUSED_REQUEST_ID:
            row = ledger().get_request(REUSED_REQUEST_ID)
            assert (row.status, row.subject_fingerprint) == (reused_request["status"], reused_request["fingerprint"])
            assert _events(REUSED_REQUEST_ID) == reused_request["events"]
        elif isinstance(request_id, str) and len(request_id) < 100:
            assert ledger().get_request(request_id) is None, f"{case.name}: a ledger row was recorded"
        assert _staged(demo_world, request_id) == 0, f"{case.name}: something was staged"
    with capsys.disabled():
        print(f"\nbad input through REST, {len(CASES)} confs:")
        for case in CASES:
            print(f"  {case.name:<30} {case.right:<14} {case.field:<20} {outcomes[case.name]}")
    assert len(outcomes) == len(CASES)


@pytest.fixture
def cli_env(stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(context.API_URL_ENV, stack.url)
    monkeypatch.setenv(context.API_USER_ENV, DEMO_USER)
    monkeypatch.setenv(context.API_PASSWORD_ENV, DEMO_PASSWORD)
    monkeypatch.delenv(context.API_TOKEN_ENV, raising=False)


def test_bad_confs_through_the_cli_never_reach_airflow(
    stack, cli_env, reused_request, tmp_path: Path, capsys, monkeypatch
):
    monkeypatch.setattr(settings, "RECEIVING_CONTROLLERS", (DECLARED_RECEIVER,))  # as the stack declares
    before = stack.api._request("GET", "/api/v2/dags/~/dagRuns", query={"limit": 1})["total_entries"]
    sent = []
    for case in CASES:
        path = tmp_path / f"{case.name}.json"
        path.write_text(json.dumps(case.conf))
        code = main(["submit", case.right, "--conf", str(path)])
        out, err = capsys.readouterr()
        assert EMAIL not in out + err
        if case.cli:
            assert code == 2, f"{case.name}: exit {code}: {err}"
            assert case.field in err, f"{case.name}: {err}"
            assert case.reason in err, f"{case.name}: {err}"
        else:
            assert code == 0, f"{case.name}: {err}"
            sent.append(case)
    after = stack.api._request("GET", "/api/v2/dags/~/dagRuns", query={"limit": 1})["total_entries"]
    assert after - before == len(sent) == 1
    run = stack.api.find_runs("dsr_", REUSED_REQUEST_ID, limit=5)[0]
    assert stack.wait_for_run(run["dag_id"], run["dag_run_id"], timeout=300)["state"] == "failed"
    assert ledger().get_request(REUSED_REQUEST_ID).subject_fingerprint == reused_request["fingerprint"]


def test_an_unknown_right_is_refused_by_name(stack, cli_env, capsys):
    with pytest.raises(AirflowApiError) as info:
        stack.api.trigger_run("dsr_deletion", {"request_id": "E2E-BAD-RIGHT", "subject": {"email": EMAIL}})
    assert info.value.status == 404
    assert "dsr_deletion" in str(info.value)
    assert main(["submit", "deletion", "--email", EMAIL]) == 2
    assert "invalid choice: 'deletion'" in capsys.readouterr().err
