"""The REST API client and ``dsr submit`` / ``dsr status`` against a small fake of Airflow's API v2.

The fake answers over real HTTP on 127.0.0.1 like Airflow 3.3 does: ``POST /auth/token``
(201, or 401 "Invalid credentials"), bearer auth on ``/api/v2`` (401 without a header,
403 "Invalid JWT token" for a bad one), 404 for an unknown DAG. The real api-server is
exercised in ``tests/e2e/test_cli.py``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from include.demo.smtp_sink import SmtpSink
from include.dsr.cli import context, submit
from include.dsr.cli.airflow_api import (
    AirflowApi,
    AirflowApiError,
    ApiAuthError,
    ApiNotFoundError,
    ApiUnreachableError,
)
from include.dsr.cli.app import main
from include.dsr.ledger.api import Ledger
from tests.support import run_smtp_sink
from tests.unit.cli_samples import TOKEN, FakeAirflow, build_sample_ledger, connection_env, serving_fake_airflow

EMAIL = "maria.lopez@example.com"


@pytest.fixture
def airflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAirflow]:
    with serving_fake_airflow(monkeypatch, "dsr_access") as server:
        yield server


def _dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def dsr(capsys: pytest.CaptureFixture[str]):
    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert EMAIL not in out + err
        assert "maria" not in out + err
        return code, out, err

    return run


# -- the client ----------------------------------------------------------------------------


def test_client_logs_in_once_and_sends_the_token(airflow: FakeAirflow) -> None:
    api = AirflowApi(airflow.url, "admin", "admin")
    assert api.get_dag("dsr_access")["is_paused"] is False
    api.get_dag("dsr_access")
    assert [c[:2] for c in airflow.calls] == [
        ("POST", "/auth/token"),
        ("GET", "/api/v2/dags/dsr_access"),
        ("GET", "/api/v2/dags/dsr_access"),
    ]


def test_client_with_ready_token_skips_login(airflow: FakeAirflow) -> None:
    AirflowApi(airflow.url, token=TOKEN).get_dag("dsr_access")
    assert [c[1] for c in airflow.calls] == ["/api/v2/dags/dsr_access"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param(
            {"username": "admin", "password": "wrong"},
            ApiAuthError,
            "refused the credentials of user 'admin' (401 Invalid credentials)",
            id="bad credentials",
        ),
        pytest.param({"token": "forged"}, ApiAuthError, "refused the token (403 Invalid JWT token)", id="bad token"),
        pytest.param(
            {"token": TOKEN, "dag": "dsr_nope"},
            ApiNotFoundError,
            "/api/v2/dags/dsr_nope not found (404",
            id="unknown DAG",
        ),
    ],
)
def test_client_errors(airflow: FakeAirflow, kwargs: dict, error: type, message: str) -> None:
    dag = kwargs.pop("dag", "dsr_access")
    with pytest.raises(error) as caught:
        AirflowApi(airflow.url, **kwargs).get_dag(dag)
    assert message in str(caught.value)


def test_client_unreachable() -> None:
    url = _dead_url()
    with pytest.raises(ApiUnreachableError) as caught:
        AirflowApi(url, "admin", "admin").get_dag("dsr_access")
    assert re.fullmatch(
        rf"Airflow API at {url} is not reachable: start it with `make demo` \(.*refused\)", str(caught.value)
    )


# Airflow 3.3's answer when the metadata DB is locked (as seen in CI on the embedded SQLite DB)
LOCKED = (
    500,
    {"detail": {"reason": "Database error", "statement": "hidden", "orig_error": "hidden", "message": "ID x"}},
)


def test_client_retries_a_locked_metadata_db_with_backoff(
    airflow: FakeAirflow, caplog: pytest.LogCaptureFixture
) -> None:
    flat = (500, {"reason": "Database error"})  # the shape without ``detail`` is read too
    airflow.failures[("GET", "/api/v2/dags/dsr_access")] = [LOCKED, flat, (503, {"detail": "Service Unavailable"})]
    api = AirflowApi(airflow.url, token=TOKEN, backoff=0.01)
    with caplog.at_level("WARNING"):
        assert api.get_dag("dsr_access")["is_paused"] is False
    assert [c[1] for c in airflow.calls] == ["/api/v2/dags/dsr_access"] * 4
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3
    assert "answered 500 (Database error); retrying in 0.0 s (1/5)" in warnings[0]
    assert "answered 500 (Database error); retrying in 0.0 s (2/5)" in warnings[1]
    assert "answered 503 (Service Unavailable); retrying in 0.0 s (3/5)" in warnings[2]


def test_client_gives_up_after_its_retries(airflow: FakeAirflow) -> None:
    airflow.failures[("GET", "/api/v2/dags/dsr_access")] = [LOCKED] * 4
    with pytest.raises(AirflowApiError) as caught:
        AirflowApi(airflow.url, token=TOKEN, retries=2, backoff=0.01).get_dag("dsr_access")
    assert caught.value.status == 500
    assert "GET /api/v2/dags/dsr_access failed (500 Database error)" in str(caught.value)
    assert len(airflow.calls) == 3


@pytest.mark.parametrize(
    "answer",
    [(500, {"detail": "Internal Server Error"}), (400, {"detail": "bad conf"}), (409, {"detail": "exists"})],
)
def test_client_does_not_retry_other_failures(airflow: FakeAirflow, answer: tuple[int, dict]) -> None:
    airflow.failures[("GET", "/api/v2/dags/dsr_access")] = [answer]
    with pytest.raises(AirflowApiError):
        AirflowApi(airflow.url, token=TOKEN, backoff=0.01).get_dag("dsr_access")
    assert len(airflow.calls) == 1


# -- dsr submit ----------------------------------------------------------------------------


def test_submit_triggers_the_run_and_prints_run_id_and_due_date(airflow: FakeAirflow, dsr) -> None:
    code, out, err = dsr("submit", "access", "--email", EMAIL, "--verified-by", "logged_in_session")
    assert code == 0, err
    method, path, body = airflow.calls[-1]
    request_id = body["conf"]["request_id"]
    assert (method, path) == ("POST", "/api/v2/dags/dsr_access/dagRuns")
    assert re.fullmatch(r"DSR-20261125-[0-9a-f]{6}", request_id)
    assert body["conf"] == {
        "request_id": request_id,
        "subject": {"email": EMAIL},
        "received_at": "2026-11-25T10:00:00Z",
        "jurisdiction": "GDPR",
        "verification": {"method": "logged_in_session", "verified_at": "2026-11-25T10:00:00Z"},
    }
    assert body["dag_run_id"] == f"dsr__{request_id}__20261125T100000Z"
    assert body["logical_date"] is None
    assert f"request   {request_id} (access, GDPR)" in out
    assert f"run       dsr__{request_id}__20261125T100000Z of dsr_access (queued)" in out
    assert "due       2026-12-28 23:59 CET" in out  # 25 Dec and 26 Dec are holidays, 27 Dec a Sunday


def test_submit_rectification_and_objection(airflow: FakeAirflow, dsr) -> None:
    for dag_id in ("dsr_rectification", "dsr_objection"):
        airflow.routes[("GET", f"/api/v2/dags/{dag_id}")] = (200, {"dag_id": dag_id, "is_paused": False})
    code, out, err = dsr(
        "submit", "rectification", "--email", EMAIL, "--verified-by", "email_link",
        "--correct", "accounts.email=maria.new@example.com", "--correct", "addresses.city@17=Köln",
    )  # fmt: skip
    assert code == 0, err
    assert airflow.calls[-1][2]["conf"]["corrections"] == [
        {"field": "accounts.email", "value": "maria.new@example.com"},
        {"field": "addresses.city", "value": "Köln", "row_id": 17},
    ]
    assert "maria.new" not in out + err
    code, out, err = dsr("submit", "objection", "--email", EMAIL, "--purpose", "marketing", "--purpose", "pricing")
    assert code == 0, err
    assert airflow.calls[-1][2]["conf"]["purposes"] == ["marketing", "pricing"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--correct", "accounts.email"], "FIELD=VALUE"),
        (["--correct", "addresses.city@x=Köln"], "ROW is the row's id"),
        (["--correct", "accounts.role=admin"], "cannot be rectified"),
    ],
)
def test_submit_refuses_bad_corrections_before_sending(airflow: FakeAirflow, dsr, argv, message) -> None:
    code, out, err = dsr("submit", "rectification", "--email", EMAIL, *argv)
    assert code != 0
    assert message in err
    assert not [c for c in airflow.calls if c[0] == "POST" and c[1].endswith("/dagRuns")]


def test_submit_with_given_id_time_phone_and_account(airflow: FakeAirflow, dsr) -> None:
    code, out, _ = dsr(
        "submit",
        "access",
        "--phone",
        "+49 30 1234567",
        "--account-id",
        "42",
        "--request-id",
        "REQ-7",
        "--received-at",
        "2026-11-02T09:30:00Z",
        "--jurisdiction",
        "CCPA",
    )
    conf = airflow.calls[-1][2]["conf"]
    assert code == 0
    assert conf["subject"] == {"phone": "+49 30 1234567", "account_id": 42}
    assert "verification" not in conf
    assert "1234567" not in out
    assert "due       2026-12-17 23:59 CET" in out  # CCPA: 45 calendar days
    assert "identity  to be confirmed by ops in the run" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(("--email", "maria.lopez@"), "subject.email: malformed email address", id="malformed email"),
        pytest.param((), "give at least one identity", id="no identity"),
        pytest.param(
            ("--email", EMAIL, "--received-at", "2027-01-01T00:00:00Z"),
            "received_at: is in the future",
            id="received in the future",
        ),
        pytest.param(
            ("--email", EMAIL, "--request-id", "x"), "request_id: required, 3-64 characters", id="bad request id"
        ),
        pytest.param(("--email", EMAIL, "--action", "apply"), "unknown keys ['action']", id="action on access"),
    ],
)
def test_submit_refuses_bad_input_before_sending(
    airflow: FakeAirflow, dsr, argv: tuple[str, ...], message: str
) -> None:
    code, out, err = dsr("submit", "access", *argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert "refused before anything was touched" in err
    assert airflow.calls == []


def test_redact() -> None:
    text = "Invalid: 'Maria.Lopez@Example.com', x@y.org, +49 30 1234567"
    assert submit.redact(text, {"email": " maria.lopez@example.com ", "phone": "+49 30 1234567"}) == (
        "Invalid: '<redacted>', <redacted>, <redacted>"
    )


def test_submit_redacts_identities_from_api_errors(airflow: FakeAirflow, dsr) -> None:
    airflow.routes[("POST", "/api/v2/dags/dsr_access/dagRuns")] = (
        400,
        {"detail": f"Invalid input for param subject: '{EMAIL}' does not match"},
    )
    code, _, err = dsr("submit", "access", "--email", EMAIL)
    assert code == 1
    assert "<redacted>" in err
    assert "(400 Invalid input for param subject" in err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({context.API_PASSWORD_ENV: "wrong"}, "refused the credentials of user 'admin'", id="bad password"),
        pytest.param({context.API_TOKEN_ENV: "forged"}, "refused the token (403 Invalid JWT token)", id="bad token"),
    ],
)
def test_submit_auth_errors(
    airflow: FakeAirflow, dsr, monkeypatch: pytest.MonkeyPatch, env: dict, message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _, err = dsr("submit", "access", "--email", EMAIL)
    assert code == 1
    assert message in err
    assert err.count("\n") == 1


def test_submit_unknown_dag(airflow: FakeAirflow, dsr) -> None:
    code, _, err = dsr("submit", "erasure", "--email", EMAIL)
    assert code == 1
    assert "DAG dsr_erasure is not in Airflow at" in err


def test_submit_to_stopped_airflow(airflow: FakeAirflow, dsr) -> None:
    url = _dead_url()
    code, out, err = dsr("submit", "access", "--email", EMAIL, "--api-url", url)
    assert code == 1
    assert out == ""
    assert err.startswith(f"dsr: error: Airflow API at {url} is not reachable")
    assert "`make demo`" in err


def test_submit_says_it_retries_a_locked_metadata_db(
    airflow: FakeAirflow, dsr, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(AirflowApi, "__init__", _with_fast_backoff(AirflowApi.__init__))
    monkeypatch.setenv(context.API_TOKEN_ENV, TOKEN)
    airflow.failures[("POST", "/api/v2/dags/dsr_access/dagRuns")] = [LOCKED, LOCKED]
    code, out, err = dsr("submit", "access", "--email", EMAIL)
    assert code == 0, err
    assert err.count("answered 500 (Database error); retrying") == 2
    assert "(queued)" in out
    assert [c[:2] for c in airflow.calls].count(("POST", "/api/v2/dags/dsr_access/dagRuns")) == 3


def _with_fast_backoff(init):
    def fast(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "backoff": 0.01})

    return fast


def test_submit_to_paused_dag_warns(airflow: FakeAirflow, dsr) -> None:
    airflow.routes[("GET", "/api/v2/dags/dsr_access")] = (200, {"dag_id": "dsr_access", "is_paused": True})
    code, out, _ = dsr("submit", "access", "--email", EMAIL)
    assert code == 0
    assert "note: dsr_access is paused" in out


# -- dsr status with the API -----------------------------------------------------------------


@pytest.fixture
def ledger(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    ledger = build_sample_ledger(ledger_url)
    monkeypatch.setenv(context.LEDGER_CONN_ENV, connection_env(ledger_url))
    yield ledger
    ledger.close()


def test_status_shows_the_run_state(airflow: FakeAirflow, ledger: Ledger, dsr) -> None:
    airflow.routes[("GET", "/api/v2/dags/dsr_access/dagRuns/dsr__REQ-OPEN__1")] = (200, {"state": "running"})
    code, out, _ = dsr("status", "REQ-OPEN")
    assert code == 0
    assert "airflow run    dsr__REQ-OPEN__1 of dsr_access: running" in out


def test_status_of_a_queued_request_not_in_the_ledger_yet(airflow: FakeAirflow, ledger: Ledger, dsr) -> None:
    run = {
        "dag_run_id": "dsr__REQ-NEW__20261125T100000Z",
        "dag_id": "dsr_access",
        "state": "queued",
        "conf": {"request_id": "REQ-NEW"},
    }
    other = {**run, "dag_run_id": "x", "conf": {"request_id": "REQ-NEW-2"}}
    airflow.routes[("GET", "/api/v2/dags/~/dagRuns")] = (200, {"dag_runs": [other, run], "total_entries": 2})
    code, out, _ = dsr("status", "REQ-NEW")
    assert code == 0
    assert out.strip() == (
        "request REQ-NEW is not in the ledger yet: run dsr__REQ-NEW__20261125T100000Z of "
        "dsr_access is queued (the run records the request when it starts)"
    )
    assert "conf_contains=REQ-NEW" in airflow.calls[-1][1]


def test_status_of_an_unknown_request(airflow: FakeAirflow, ledger: Ledger, dsr) -> None:
    airflow.routes[("GET", "/api/v2/dags/~/dagRuns")] = (200, {"dag_runs": [], "total_entries": 0})
    code, _, err = dsr("status", "REQ-NOPE")
    assert code == 1
    assert err == (
        "dsr: error: request 'REQ-NOPE' is not in the ledger and no Airflow run carries it: "
        "check the id with `dsr list`\n"
    )


# -- dsr extend: the subject's address comes from the run conf ------------------------------------


@pytest.fixture
def sink(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpSink]:
    yield from run_smtp_sink(tmp_path, monkeypatch)


def test_extend_notifies_the_address_in_the_run_conf(airflow: FakeAirflow, ledger: Ledger, sink: SmtpSink, dsr) -> None:
    airflow.routes[("GET", "/api/v2/dags/dsr_access/dagRuns/dsr__REQ-OPEN__1")] = (
        200,
        {"state": "running", "conf": {"request_id": "REQ-OPEN", "subject": {"email": EMAIL}}},
    )
    code, out, err = dsr("extend", "REQ-OPEN", "--reason", "six partners involved")
    assert code == 0, err
    assert "new due    2027-02-02 23:59 CET" in out
    (mail,) = sink.messages()
    assert mail["To"] == EMAIL
    assert ledger.get_request("REQ-OPEN").extension_reason == "six partners involved"


def test_extend_for_a_run_without_email(airflow: FakeAirflow, ledger: Ledger, sink: SmtpSink, dsr) -> None:
    airflow.routes[("GET", "/api/v2/dags/dsr_access/dagRuns/dsr__REQ-OPEN__1")] = (
        200,
        {"state": "running", "conf": {"request_id": "REQ-OPEN", "subject": {"phone": "+49 30 1234567"}}},
    )
    code, _, err = dsr("extend", "REQ-OPEN", "--reason", "six partners involved")
    assert code == 1
    assert "has no email in its conf" in err
    assert "1234567" not in err
    assert ledger.get_request("REQ-OPEN").extended_due_at is None
    assert sink.messages() == []
