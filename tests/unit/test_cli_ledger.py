"""``dsr status / list / extend / ledger verify / evidence`` against a ledger with known requests.

Runs on SQLite and, with ``DSR_TEST_POSTGRES_URL``, on PostgreSQL. The Airflow API points at a
port where nothing listens: commands that only need the ledger must not depend on it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from include import settings
from include.demo.smtp_sink import SmtpSink
from include.dsr.cli import context
from include.dsr.cli.app import main
from include.dsr.ledger.api import Ledger
from include.dsr.ledger.schema import dsr_events
from include.dsr.sla import deadlines as sla
from tests.support import free_port, run_smtp_sink, smtp_connection
from tests.unit.cli_samples import NOW, PACKAGE_LINK, SUBJECT_EMAILS, build_sample_ledger, connection_env


@pytest.fixture
def ledger(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    ledger = build_sample_ledger(ledger_url)
    monkeypatch.setenv(context.LEDGER_CONN_ENV, connection_env(ledger_url))
    monkeypatch.setenv(context.API_URL_ENV, f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(context, "now_utc", lambda: NOW)
    yield ledger
    ledger.close()


@pytest.fixture
def sink(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpSink]:
    yield from run_smtp_sink(tmp_path, monkeypatch)


@pytest.fixture
def dsr(capsys: pytest.CaptureFixture[str]):
    """Run the CLI; return (exit code, stdout, stderr) and check no identity was printed."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert not any(email in out + err for email in SUBJECT_EMAILS)
        return code, out, err

    return run


# -- status ------------------------------------------------------------------------------


def test_status_shows_row_deadline_after_pause_and_systems(ledger: Ledger, dsr) -> None:
    code, out, err = dsr("status", "REQ-OPEN")
    assert code == 0, err
    assert "REQ-OPEN (access, GDPR)" in out
    assert "waiting_on_partner (SLA: on_track)" in out
    assert "due            2026-12-02 23:59 CET" in out
    assert "effective due  2026-12-04 23:59 CET (9 days left)" in out  # counted 2-day pause
    assert "state unknown" in out
    assert "is not reachable" in out
    assert "fabconnect_app.account  export  completed  3" in out
    assert "payflow                 export  waiting    -      partner reference PF-1001" in out


@pytest.mark.parametrize(
    ("flags", "shows_link"),
    [pytest.param((), False, id="link hidden by default"), pytest.param(("--show-link",), True, id="--show-link")],
)
def test_status_package_link_only_on_request(ledger: Ledger, dsr, flags: tuple[str, ...], shows_link: bool) -> None:
    code, out, _ = dsr("status", "REQ-DONE", *flags)
    assert code == 0
    assert (PACKAGE_LINK in out) is shows_link
    assert "expires 2026-10-27 13:00 CET" in out
    assert "closed         2026-10-20 14:00 CEST" in out


def test_status_json_has_facts_and_no_link(ledger: Ledger, dsr) -> None:
    code, out, _ = dsr("status", "REQ-DONE", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["status"] == "completed"
    assert data["sla_status"] == "closed"
    assert "package_link" not in data
    assert PACKAGE_LINK not in out
    assert [s["system"] for s in data["systems"]] == ["fabconnect_app.orders", "precision_parts_gmbh"]
    assert data["airflow_run"]["state"] is None


def test_status_of_unknown_request_fails_in_one_line(ledger: Ledger, dsr) -> None:
    code, out, err = dsr("status", "REQ-NOPE")
    assert code == 1
    assert out == ""
    assert err.startswith("dsr: error: request 'REQ-NOPE' is not in the ledger")
    assert err.count("\n") == 1


# -- list --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        pytest.param((), ["REQ-LATE", "REQ-DONE", "REQ-OPEN", "REQ-CCPA"], id="all, oldest first"),
        pytest.param(("--open",), ["REQ-LATE", "REQ-OPEN", "REQ-CCPA"], id="--open"),
        pytest.param(("--status", "completed"), ["REQ-DONE"], id="--status"),
        pytest.param(("--open", "--right", "portability"), [], id="--right with --open"),
    ],
)
def test_list_filters(ledger: Ledger, dsr, flags: tuple[str, ...], expected: list[str]) -> None:
    code, out, _ = dsr("list", "--json", *flags)
    assert code == 0
    assert [r["request_id"] for r in json.loads(out)] == expected


def test_list_table_shows_sla_and_days_left(ledger: Ledger, dsr) -> None:
    code, out, _ = dsr("list", "--open")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["REQUEST_ID", "RIGHT", "STATUS", "SLA", "RECEIVED", "DUE", "DAYS", "LEFT", "CLOSED"]
    assert lines[1].split() == ["REQ-LATE", "access", "received", "breached", "2026-09-01", "2026-10-01", "-55", "-"]
    assert lines[3].split()[:6] == ["REQ-CCPA", "access", "received", "on_track", "2026-11-20", "2027-01-04"]


def test_list_rejects_unknown_status(ledger: Ledger, dsr) -> None:
    code, _, err = dsr("list", "--status", "lost")
    assert code == 2
    assert "invalid choice: 'lost'" in err


def test_console_script_piped_into_head_ends_without_a_traceback(ledger_url: str, tmp_path) -> None:
    """``dsr list --json | head``: the installed console script, from another directory, output cut short."""
    import shutil
    import subprocess
    from datetime import timedelta

    with Ledger(ledger_url) as many:
        many.create_schema()
        for i in range(300):  # well over a pipe buffer (64 KiB) of JSON
            received = NOW - timedelta(days=1, minutes=i)
            many.record_request(f"REQ-PIPE-{i:04d}", "access", "GDPR", "cd" * 32, received, sla.due_at(received))
    script = shutil.which("dsr", path=str(settings.PROJECT_ROOT / ".venv" / "bin"))
    assert script, "the dsr console script is installed with the project (pip install -e .)"
    env = {**os.environ, context.LEDGER_CONN_ENV: connection_env(ledger_url)}
    proc = subprocess.Popen(
        [script, "list", "--json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    head = proc.stdout.read(200)  # read a little, then close the pipe like `head -c 200`
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert head.startswith(b"[")
    assert "Traceback" not in stderr
    assert "BrokenPipe" not in stderr
    assert proc.returncode == 141


# -- extend ------------------------------------------------------------------------------

SUBJECT = SUBJECT_EMAILS[0]


def test_extend_sends_the_notice_then_records_reason_and_three_month_due(ledger: Ledger, sink: SmtpSink, dsr) -> None:
    code, out, err = dsr("extend", "REQ-OPEN", "--reason", "  six partners involved  ", "--email", SUBJECT)
    row = ledger.get_request("REQ-OPEN")
    assert code == 0, err
    assert row.extended_due_at == sla.due_at(row.received_at, "GDPR", extended=True)
    assert row.extension_reason == "six partners involved"
    assert "first due  2026-12-04 23:59 CET" in out  # 2 Dec moved by the counted 2-day pause
    assert "new due    2027-02-02 23:59 CET" in out
    assert "notice     sent 2026-11-25 11:00 CET (message " in out
    (mail,) = sink.messages()
    assert mail["To"] == SUBJECT
    assert "six partners involved" in mail.get_body().get_content()
    types = [e.event_type for e in ledger.events("REQ-OPEN")]
    assert types[-2:] == ["notice.sent", "request.extended"]


def test_extend_again_with_same_reason_changes_nothing(ledger: Ledger, sink: SmtpSink, dsr) -> None:
    dsr("extend", "REQ-OPEN", "--reason", "six partners involved", "--email", SUBJECT)
    code, out, _ = dsr("extend", "REQ-OPEN", "--reason", "six partners involved", "--email", SUBJECT)
    assert code == 0
    assert "already extended" in out
    assert [e.event_type for e in ledger.events("REQ-OPEN")].count("request.extended") == 1
    assert len(sink.messages()) == 1


@pytest.mark.parametrize(
    ("request_id", "reason", "message"),
    [
        pytest.param(
            "REQ-LATE",
            "backlog",
            "the first deadline (2026-10-01T21:59:59+00:00) has passed",
            id="after the first deadline",
        ),
        pytest.param("REQ-DONE", "backlog", "is closed (completed)", id="closed request"),
        pytest.param("REQ-OPEN", "   ", "an extension needs a reason", id="blank reason"),
        pytest.param("REQ-NOPE", "backlog", "request 'REQ-NOPE' is not in the ledger", id="unknown request"),
    ],
)
def test_extend_refused_sends_and_records_nothing(
    ledger: Ledger, sink: SmtpSink, dsr, request_id: str, reason: str, message: str
) -> None:
    before = ledger.events()
    code, out, err = dsr("extend", request_id, "--reason", reason, "--email", SUBJECT)
    assert code == 1
    assert out == ""
    assert message in err
    assert err.count("\n") == 1
    assert ledger.events() == before
    assert sink.messages() == []


def test_extend_second_extension_refused(ledger: Ledger, sink: SmtpSink, dsr) -> None:
    dsr("extend", "REQ-OPEN", "--reason", "six partners involved", "--email", SUBJECT)
    code, _, err = dsr("extend", "REQ-OPEN", "--reason", "another reason", "--email", SUBJECT)
    assert code == 1
    assert "already extended" in err


def test_extend_without_address_or_airflow_records_nothing(ledger: Ledger, sink: SmtpSink, dsr) -> None:
    code, _, err = dsr("extend", "REQ-OPEN", "--reason", "six partners involved")
    assert code == 1
    assert "cannot read the subject's address from run dsr__REQ-OPEN__1" in err
    assert "--email" in err
    assert ledger.get_request("REQ-OPEN").extended_due_at is None
    assert sink.messages() == []


def test_extend_with_mail_server_down_records_nothing(ledger: Ledger, dsr, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DSR_SMTP", smtp_connection(free_port()))  # nothing listens there
    code, _, err = dsr("extend", "REQ-OPEN", "--reason", "six partners involved", "--email", SUBJECT)
    assert code == 1
    assert "SMTP" in err
    assert ledger.get_request("REQ-OPEN").extended_due_at is None


def test_extend_without_reason_is_a_usage_error(ledger: Ledger, dsr) -> None:
    code, _, err = dsr("extend", "REQ-OPEN")
    assert code == 2
    assert "--reason" in err


# -- ledger verify -----------------------------------------------------------------------


def _tamper(ledger: Ledger, seq: int) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(sa.update(dsr_events).where(dsr_events.c.seq == seq).values(payload='{"forged":true}'))


def test_ledger_verify_ok(ledger: Ledger, dsr) -> None:
    head = ledger.events()[-1]
    code, out, _ = dsr("ledger", "verify")
    assert code == 0
    assert out.strip() == f"ledger ok: {head.seq} events verified, head seq {head.seq} hash {head.hash}"


def test_ledger_verify_reports_first_broken_link(ledger: Ledger, dsr) -> None:
    _tamper(ledger, 5)
    code, out, err = dsr("ledger", "verify")
    assert code == 1
    assert out == ""
    assert (
        err == "dsr: error: ledger chain BROKEN at seq 5: hash mismatch at seq 5: row content changed "
        "(last good seq 4)\n"
    )
    code, out, _ = dsr("ledger", "verify", "--json")
    assert code == 1
    assert json.loads(out)["first_broken_seq"] == 5


# -- evidence ----------------------------------------------------------------------------


def test_evidence_writes_json_and_markdown(ledger: Ledger, dsr, tmp_path) -> None:
    code, out, err = dsr("evidence", "REQ-DONE", "--out", str(tmp_path / "bundle"))
    bundle = json.loads((tmp_path / "bundle" / "evidence-REQ-DONE.json").read_text())
    markdown = (tmp_path / "bundle" / "evidence-REQ-DONE.md").read_text()
    assert code == 0, err
    assert "ledger chain verified" in out
    assert bundle["request"]["request_id"] == "REQ-DONE"
    assert bundle["chain"]["ok"] is True
    assert markdown.startswith("# Evidence: data-subject request REQ-DONE")
    assert PACKAGE_LINK not in json.dumps(bundle) + markdown


def test_evidence_with_broken_chain_is_written_and_fails(ledger: Ledger, dsr, tmp_path) -> None:
    _tamper(ledger, 2)
    code, _, err = dsr("evidence", "REQ-OPEN", "--out", str(tmp_path))
    assert code == 1
    assert "evidence written, but the ledger chain does not verify" in err
    assert json.loads((tmp_path / "evidence-REQ-OPEN.json").read_text())["chain"]["first_broken_seq"] == 2


def test_evidence_of_unknown_request(ledger: Ledger, dsr, tmp_path) -> None:
    code, _, err = dsr("evidence", "REQ-NOPE", "--out", str(tmp_path))
    assert code == 1
    assert "not in the ledger" in err
    assert list(tmp_path.glob("evidence-*")) == []


# -- where the ledger comes from ---------------------------------------------------------


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        pytest.param(
            {"conn_type": "sqlite", "host": "/nonexistent/ledger.sqlite"},
            "the ledger database /nonexistent/ledger.sqlite does not exist",
            id="missing sqlite file",
        ),
        pytest.param({"conn_type": "sqlite", "host": "EMPTY"}, "has no ledger tables", id="database without ledger"),
    ],
)
def test_missing_ledger_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, dsr, tmp_path, conn: dict, message: str
) -> None:
    if conn["host"] == "EMPTY":
        conn["host"] = str(tmp_path / "empty.sqlite")
        sa.create_engine(f"sqlite:///{conn['host']}").connect().close()
    monkeypatch.setenv(context.LEDGER_CONN_ENV, json.dumps(conn))
    code, _, err = dsr("list", "--open")
    assert code == 1
    assert message in err
    assert "make demo" in err


def test_ledger_connection_defaults_to_the_demo_outside_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(context.LEDGER_CONN_ENV, raising=False)
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    assert context.ledger_url() == f"sqlite:///{settings.DEMO_DIR / 'ledger.sqlite'}"


def test_configured_airflow_gets_no_demo_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(context.LEDGER_CONN_ENV, raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", "/srv/airflow")
    context.demo_defaults()
    assert context.LEDGER_CONN_ENV not in os.environ


def test_now_is_aware_utc() -> None:
    assert context.now_utc().tzinfo == UTC
    assert context.now_utc() > datetime(2026, 1, 1, tzinfo=UTC)
