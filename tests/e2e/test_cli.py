"""``dsr`` against a real ``airflow api-server`` (REST API v2, simple auth manager, JWT).

One api-server (core apps, one worker) per module, on a free port, with the test session's
AIRFLOW_HOME and metadata DB; ``airflow dags reserialize`` registers the DAGs first (no
dag-processor). No scheduler runs: a submitted run stays queued, which is all ``submit``
promises. The ledger is a sample ledger in the module's temp dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from include import settings
from include.demo.airflow_env import DEMO_PASSWORD, DEMO_USER
from include.demo.smtp_sink import SmtpSink
from include.dsr.cli import context, fmt, submit
from include.dsr.cli.airflow_api import AirflowApi
from include.dsr.cli.app import main
from include.dsr.ledger.api import Ledger, subject_fingerprint
from include.dsr.sla import deadlines as sla
from tests.e2e.api_server import free_port, running_api_server
from tests.support import run_smtp_sink
from tests.unit.cli_samples import build_sample_ledger, connection_env

pytestmark = pytest.mark.slow

EMAIL = "cli.e2e.subject@example.com"


@pytest.fixture(scope="module")
def api_url(airflow_db, tmp_path_factory) -> Iterator[str]:
    """Base URL of a running api-server that knows the project's DAGs."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "reserialize"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with running_api_server(tmp_path_factory.mktemp("cli")) as base:
        yield base
        api = AirflowApi(base, DEMO_USER, DEMO_PASSWORD)  # leave no queued run for a later scheduler
        for run in api.find_runs("dsr_", "E2E-CLI-", limit=100):
            api.delete_run(run["dag_id"], run["dag_run_id"])


@pytest.fixture(scope="module")
def ledger_url(tmp_path_factory) -> str:
    """A sample ledger (REQ-OPEN, REQ-DONE, ...) shared by the module."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli-ledger') / 'ledger.sqlite'}"
    build_sample_ledger(url).close()
    return url


@pytest.fixture(scope="module")
def ledger_env(ledger_url: str) -> str:
    return connection_env(ledger_url)


@pytest.fixture
def env(api_url: str, ledger_env: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The CLI's environment: this api-server, the sample ledger, the demo login."""
    values = {
        context.API_URL_ENV: api_url,
        context.LEDGER_CONN_ENV: ledger_env,
        context.API_USER_ENV: DEMO_USER,
        context.API_PASSWORD_ENV: DEMO_PASSWORD,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(context.API_TOKEN_ENV, raising=False)
    return values


@pytest.fixture
def api(api_url: str) -> AirflowApi:
    return AirflowApi(api_url, DEMO_USER, DEMO_PASSWORD)


@pytest.fixture
def dsr(capsys: pytest.CaptureFixture[str]):
    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert EMAIL not in out + err
        return code, out, err

    return run


def _field(out: str, label: str) -> str:
    return next(line[len(label) :].strip() for line in out.splitlines() if line.startswith(label))


def test_bin_dsr_submit_creates_a_queued_run_with_the_conf(env: dict, api: AirflowApi, tmp_path: Path) -> None:
    """The shell wrapper from another directory, as ops run it."""
    done = subprocess.run(
        [
            str(settings.PROJECT_ROOT / "bin" / "dsr"),
            "submit",
            "access",
            "--email",
            EMAIL,
            "--verified-by",
            "logged_in_session",
            "--request-id",
            "E2E-CLI-0001",
        ],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert EMAIL not in done.stdout + done.stderr
    run_id = _field(done.stdout, "run").split()[0]
    assert run_id.startswith("dsr__E2E-CLI-0001__")
    assert "due" in done.stdout
    assert "CET" in _field(done.stdout, "due")
    run = api.get_run("dsr_access", run_id)
    assert run["state"] == "queued"
    assert run["run_type"] == "manual"
    assert run["conf"]["request_id"] == "E2E-CLI-0001"
    assert run["conf"]["subject"] == {"email": EMAIL}
    assert run["conf"]["verification"]["method"] == "logged_in_session"


def test_status_finds_the_queued_run_before_the_ledger_knows_it(env: dict, api: AirflowApi, dsr) -> None:
    code, out, _ = dsr("submit", "portability", "--email", EMAIL, "--request-id", "E2E-CLI-0002")
    assert code == 0
    run_id = _field(out, "run").split()[0]
    code, out, err = dsr("status", "E2E-CLI-0002")
    assert code == 0, err
    assert out.strip() == (
        f"request E2E-CLI-0002 is not in the ledger yet: run {run_id} of dsr_portability is "
        "queued (the run records the request when it starts)"
    )


@pytest.fixture
def sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpSink]:
    yield from run_smtp_sink(tmp_path, monkeypatch)


def test_extend_notifies_the_subject_of_the_run(env: dict, ledger_url: str, sink: SmtpSink, dsr) -> None:
    """The address is read back from the real run's conf; the run itself never started (no scheduler)."""
    code, out, _ = dsr("submit", "access", "--email", EMAIL, "--request-id", "E2E-CLI-0003")
    assert code == 0
    run_id = _field(out, "run").split()[0]
    with Ledger(ledger_url) as ledger:  # what the run's first task records
        row = ledger.record_request(
            "E2E-CLI-0003",
            "access",
            "GDPR",
            subject_fingerprint({"email": EMAIL}, "s"),
            context.now_utc(),
            sla.due_at(context.now_utc(), "GDPR"),
            dag_run_id=run_id,
        )
    code, out, err = dsr("extend", "E2E-CLI-0003", "--reason", "six partners involved")
    assert code == 0, err
    assert _field(out, "new due") == fmt.when(sla.due_at(row.received_at, "GDPR", extended=True))
    (mail,) = sink.messages()
    assert mail["To"] == EMAIL
    assert "six partners involved" in mail.get_body().get_content()


def test_status_of_a_ledger_request_asks_airflow_for_its_run(env: dict, dsr) -> None:
    code, out, _ = dsr("status", "REQ-OPEN")
    assert code == 0
    assert "dsr__REQ-OPEN__1: state unknown" in out
    assert "not found (404" in out


def test_unknown_request_is_a_clear_error(env: dict, dsr) -> None:
    code, out, err = dsr("status", "E2E-CLI-NOPE")
    assert code == 1
    assert out == ""
    assert err == (
        "dsr: error: request 'E2E-CLI-NOPE' is not in the ledger and no Airflow run carries it: "
        "check the id with `dsr list`\n"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        pytest.param({context.API_TOKEN_ENV: "not-a-jwt"}, "refused the token (403 Invalid JWT token)", id="bad token"),
        pytest.param(
            {context.API_PASSWORD_ENV: "wrong"},
            "refused the credentials of user 'admin' (401 Invalid credentials)",
            id="bad password",
        ),
    ],
)
def test_bad_token_or_credentials(
    env: dict, dsr, monkeypatch: pytest.MonkeyPatch, override: dict, message: str
) -> None:
    for name, value in override.items():
        monkeypatch.setenv(name, value)
    code, out, err = dsr("submit", "access", "--email", EMAIL)
    assert code == 1
    assert out == ""
    assert message in err
    assert err.count("\n") == 1


def test_stopped_airflow(env: dict, dsr) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = dsr("submit", "access", "--email", EMAIL, "--api-url", url)
    assert code == 1
    assert out == ""
    assert err.startswith(f"dsr: error: Airflow API at {url} is not reachable: start it with `make demo` (")


def test_dag_not_deployed(env: dict, dsr, monkeypatch: pytest.MonkeyPatch) -> None:
    # every right's DAG is deployed now: a right the CLI knows and this Airflow does not stands in
    monkeypatch.setattr(submit, "RIGHTS", (*submit.RIGHTS, "ghost"))
    code, _, err = dsr("submit", "ghost", "--email", EMAIL)
    assert code == 1
    assert "DAG dsr_ghost is not in Airflow" in err


def test_bad_input_never_reaches_airflow(env: dict, api: AirflowApi, dsr) -> None:
    code, _, err = dsr("submit", "access", "--email", "not-an-email", "--request-id", "E2E-CLI-BAD")
    assert code == 2
    assert "subject.email: malformed email address" in err
    assert api.find_runs("dsr_", "E2E-CLI-BAD") == []
