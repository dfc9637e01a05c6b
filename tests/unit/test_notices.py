"""Notices to the subject and ops alerts, sent through a real SMTP server (the demo sink)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from include.dsr.core.errors import TerminalError, TransientError
from include.dsr.notify.mail import Mail, SmtpHookTransport
from include.dsr.notify.notices import Notices, answer_address, recipient_from_conf, render
from include.dsr.sla import deadlines as sla
from include.dsr.sla import rules as sla_rules
from tests.support import free_port, smtp_connection
from tests.unit.sla_helpers import CONTROLLER, OPS_EMAIL, SUBJECT_EMAIL, record

RECEIVED = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def notices(ledger, clock, sink):
    record(ledger, "REQ-1", RECEIVED)
    return Notices(ledger, controller=CONTROLLER, clock=clock)


def _body(message) -> str:
    return message.get_body(("html", "plain")).get_content()


def _only_mail(sink):
    mails = sink.messages()
    assert len(mails) == 1, [m["Subject"] for m in mails]
    return mails[0]


@pytest.mark.parametrize(
    ("send", "subject_has", "body_has"),
    [
        pytest.param(
            lambda n: n.acknowledgement("REQ-1", SUBJECT_EMAIL),
            "We received your request REQ-1",
            ["Wednesday, 2 December 2026", "access to your personal data"],
            id="acknowledgement",
        ),
        pytest.param(
            lambda n: n.extension(
                "REQ-1",
                SUBJECT_EMAIL,
                sla.due_at(RECEIVED, extended=True),
                "your request involves 9 manufacturing partners",
            ),
            "We need more time",
            ["9 manufacturing partners", "Tuesday, 2 February 2027", "Art. 77 GDPR"],
            id="extension with reasons and new due date",
        ),
        pytest.param(
            lambda n: n.completion(
                "REQ-1",
                SUBJECT_EMAIL,
                "https://s3.example.com/REQ-1/report.html?sig=1&x=2",
                datetime(2026, 11, 30, 9, tzinfo=UTC),
            ),
            "is complete",
            ['href="https://s3.example.com/REQ-1/report.html?sig=1&amp;x=2"', "Monday, 30 November 2026"],
            id="completion with the package link",
        ),
        pytest.param(
            lambda n: n.refusal(
                "REQ-1",
                SUBJECT_EMAIL,
                ["manifestly excessive: 5th identical request in 3 weeks", "no data beyond the last answer"],
            ),
            "We cannot fulfil your request REQ-1",
            ["5th identical request", "no data beyond", "supervisory authority", "judicial remedy"],
            id="refusal with reasons and complaint rights",
        ),
        pytest.param(
            lambda n: n.refusal("REQ-1", SUBJECT_EMAIL, ["invoices kept until 2034 (legal obligation)"], partial=True),
            "Part of your request REQ-1",
            ["invoices kept until 2034", "Art. 79 GDPR"],
            id="partial refusal",
        ),
    ],
)
def test_subject_notice_is_mailed_and_recorded_without_the_address(notices, ledger, sink, send, subject_has, body_has):
    event = send(notices)
    mail = _only_mail(sink)
    assert subject_has in mail["Subject"]
    assert mail["To"] == SUBJECT_EMAIL
    assert mail["From"] == "privacy@example.com"
    assert mail["Message-ID"] == f"<{event.payload['message_id']}@dsr.fabconnect.example>"
    body = _body(mail)
    for text in body_has:
        assert text in body
    assert event.event_type == "notice.sent"
    assert SUBJECT_EMAIL not in event.payload_json
    assert event.payload["sent_at"].startswith("2026-11-25")


def test_a_notice_is_sent_once(notices, ledger, sink):
    first = notices.acknowledgement("REQ-1", SUBJECT_EMAIL)
    second = notices.acknowledgement("REQ-1", SUBJECT_EMAIL)
    assert first.seq == second.seq
    assert len(sink.messages()) == 1


def test_the_address_never_reaches_the_logs(notices, caplog):
    with caplog.at_level(logging.DEBUG):
        notices.acknowledgement("REQ-1", SUBJECT_EMAIL)
        notices.refusal("REQ-1", SUBJECT_EMAIL, ["identity could not be verified"])
    assert "REQ-1" in caplog.text
    assert SUBJECT_EMAIL not in caplog.text
    assert SUBJECT_EMAIL not in repr(Mail(to=SUBJECT_EMAIL, subject="s", html="h", sender="privacy@example.com"))


def test_ops_alert_once_per_kind_and_deadline(notices, sink):
    deadline = sla.due_at(RECEIVED)
    first = notices.ops_alert("REQ-1", "at_risk", deadline, 5, ["payflow"], ops_address=OPS_EMAIL)
    notices.ops_alert("REQ-1", "at_risk", deadline, 4, ["payflow"], ops_address=OPS_EMAIL)
    mail = _only_mail(sink)
    assert mail["To"] == OPS_EMAIL
    assert mail["Subject"] == "[DSR at risk] REQ-1 due Wednesday, 2 December 2026"
    assert "payflow" in _body(mail)
    assert "5 days left" in _body(mail)
    assert first.event_type == "ops.alert_sent"
    assert first.payload["owed_partners"] == ["payflow"]
    notices.ops_alert("REQ-1", "breached", deadline, -1, [], ops_address=OPS_EMAIL)
    notices.ops_alert("REQ-1", "at_risk", deadline + timedelta(days=60), 3, [], ops_address=OPS_EMAIL)  # extended
    assert len(sink.messages()) == 3


def test_ops_address_comes_from_the_variable(notices, sink, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_DSR_OPS_EMAIL", "duty@example.com")
    notices.ops_alert("REQ-1", "breached", sla.due_at(RECEIVED), -2)
    assert _only_mail(sink)["To"] == "duty@example.com"


def test_extension_with_a_real_notice(ledger, clock, sink):
    record(ledger, "REQ-1", RECEIVED)
    notices = Notices(ledger, controller=CONTROLLER, clock=clock)
    row = sla_rules.extend_request(
        ledger,
        "REQ-1",
        "complex request",
        clock.now,
        lambda r, due: notices.extension(r.request_id, SUBJECT_EMAIL, due, "complex request"),
    )
    assert row.extended_due_at == sla.due_at(RECEIVED, extended=True)
    assert sla_rules.extension_is_valid(row, ledger.events("REQ-1"), clock.now)
    assert "Tuesday, 2 February 2027" in _body(_only_mail(sink))


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        pytest.param({"subject": {"phone": "+49 30 1234567"}}, "no email", id="phone only"),
        pytest.param({"subject": {"email": "not-an-address"}}, "not a single email address", id="malformed"),
        pytest.param({}, "no email", id="no subject"),
    ],
)
def test_recipient_from_conf_refuses_without_quoting(conf, message):
    with pytest.raises(TerminalError, match=message) as excinfo:
        recipient_from_conf(conf, "REQ-1")
    assert "not-an-address" not in str(excinfo.value)


def test_recipient_from_conf():
    assert recipient_from_conf({"subject": {"email": f"  {SUBJECT_EMAIL} "}}, "REQ-1") == SUBJECT_EMAIL
    assert recipient_from_conf({"subject": {"phone": "+49 30 1234567"}}, "REQ-1", required=False) is None


@pytest.mark.parametrize(
    ("typed", "verified", "answer"),
    [
        pytest.param("Maria@Example.com", {"maria@example.com"}, "Maria@Example.com", id="typed and verified"),
        pytest.param(
            "someone.else@example.com", {"maria@example.com"}, "maria@example.com", id="typed, not the subject's"
        ),
        pytest.param(None, {"maria@example.com"}, "maria@example.com", id="phone request, account email verified"),
        pytest.param("someone.else@example.com", set(), None, id="nothing verified: another channel"),
        pytest.param("x@example.com", {"a@example.com", "b@example.com"}, None, id="two verified, neither typed"),
    ],
)
def test_the_answer_goes_only_to_a_verified_address(typed, verified, answer):
    conf = {"subject": {"email": typed}} if typed else {"subject": {"phone": "+4915112345678"}}
    assert answer_address(conf, "REQ-1", verified) == answer


def test_refusal_needs_reasons(notices):
    with pytest.raises(TerminalError, match="reasons"):
        notices.refusal("REQ-1", SUBJECT_EMAIL, ["  "])


def test_unreachable_server_is_transient(ledger, clock, monkeypatch):
    record(ledger, "REQ-1", RECEIVED)
    monkeypatch.setenv("AIRFLOW_CONN_DSR_SMTP", smtp_connection(free_port()))  # nothing listens there
    with pytest.raises(TransientError, match="SMTP"):
        Notices(ledger, controller=CONTROLLER, clock=clock).acknowledgement("REQ-1", SUBJECT_EMAIL)
    assert [e.event_type for e in ledger.events("REQ-1")] == ["request.received"]


def test_missing_connection_is_terminal(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_DSR_SMTP", raising=False)
    mail = Mail(to=SUBJECT_EMAIL, subject="s", html="<p>h</p>", sender="privacy@example.com")
    with pytest.raises(TerminalError, match="AIRFLOW_CONN_NO_SUCH_SMTP"):
        SmtpHookTransport("no_such_smtp").send(mail)


def test_templates_escape_html():
    subject, html = render(
        "refusal",
        {
            "controller": CONTROLLER,
            "reasons": ["<script>x</script>"],
            "partial": False,
            "request": {
                "request_id": "REQ-1",
                "right": "access",
                "jurisdiction": "GDPR",
                "status": "refused",
                "right_label": "access",
                "received": "today",
                "due": "later",
            },
        },
    )
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert subject.startswith("We cannot fulfil")


def _statements(ledger) -> list[str]:
    """Every statement sent through ``ledger``'s engine (appended to as they run)."""
    import sqlalchemy as sa

    sent: list[str] = []
    sa.event.listen(ledger.engine, "before_cursor_execute", lambda conn, cursor, statement, *_: sent.append(statement))
    return sent


def test_a_chunk_of_notices_reads_its_rows_and_sent_notices_up_front(notices, ledger, sink):
    ids = [f"REQ-C{i}" for i in range(5)]
    for rid in ids:
        record(ledger, rid, RECEIVED)
    notices.acknowledgement("REQ-C0", SUBJECT_EMAIL)  # sent before: not again
    sent = _statements(ledger)
    with ledger.batch(), notices.recorded_together(ids):
        for rid in ids:
            notices.acknowledgement(rid, SUBJECT_EMAIL)
    reads = [s for s in sent if s.lstrip().upper().startswith("SELECT") and "chain" not in s]
    single_reads = [s for s in reads if "= ?" in s or "= %(" in s]  # one row or one dedupe key
    assert single_reads == []  # neither a row nor a sent notice is read notice by notice
    assert len(sink.messages()) == 5  # REQ-C0's first one, then C1..C4
    assert [e.event_type for e in ledger.events("REQ-C0")].count("notice.sent") == 1
    for rid in ids[1:]:
        assert [e.event_type for e in ledger.events(rid)].count("notice.sent") == 1


def test_a_notice_shows_the_request_as_the_batch_left_it(notices, ledger, sink):
    """The rows read up front are the batch's: a change made in it before the notice is in the notice."""
    record(ledger, "REQ-X", RECEIVED)
    with ledger.batch(), notices.recorded_together(["REQ-X"]):
        ledger.extend("REQ-X", sla.due_at(RECEIVED, extended=True), "six partners involved")
        notices.acknowledgement("REQ-X", SUBJECT_EMAIL)
    assert "Tuesday, 2 February 2027" in _body(_only_mail(sink))  # the extended due date


@pytest.fixture
def chunk_ledger(ledger_on_backends):
    """The ledger a chunk of notices is recorded in, on SQLite and on PostgreSQL."""
    return ledger_on_backends


@pytest.fixture
def chunk_notices(chunk_ledger, clock, sink):
    return Notices(chunk_ledger, controller=CONTROLLER, clock=clock)


def _count_connections(monkeypatch, refuse_after: int | None = None) -> list[int]:
    """Record each SMTP connection the transport opens (wraps the real client factory); with
    ``refuse_after``, a further connection is refused as a relay capping its clients does (421)."""
    import smtplib
    from contextlib import contextmanager

    import include.dsr.connections as connections

    opened: list[int] = []
    real = connections.smtp_client

    @contextmanager
    def counted(conn_id):
        if refuse_after is not None and len(opened) >= refuse_after:
            raise smtplib.SMTPConnectError(421, b"too many connections from your host")
        with real(conn_id) as client:
            opened.append(1)
            yield client

    monkeypatch.setattr(connections, "smtp_client", counted)
    return opened


@pytest.mark.parametrize(("size", "connections"), [(3, 1), (20, 4)])
def test_a_chunk_goes_out_over_several_connections_each_mail_once(
    chunk_notices, chunk_ledger, sink, monkeypatch, size, connections
):
    notices, ledger = chunk_notices, chunk_ledger
    ids = [f"REQ-P{i:02d}" for i in range(size)]
    for rid in ids:
        record(ledger, rid, RECEIVED)
    opened = _count_connections(monkeypatch)
    with notices.sending(), ledger.batch(), notices.recorded_together(ids):
        for rid in ids:
            notices.acknowledgement(rid, SUBJECT_EMAIL)
            notices.acknowledgement(rid, SUBJECT_EMAIL)  # asked twice in the block: one mail
    assert len(opened) == connections
    delivered = sorted(m["Message-ID"] for m in sink.messages())
    recorded = []
    for rid in ids:
        [event] = [e for e in ledger.events(rid) if e.event_type == "notice.sent"]
        assert event.payload["sent_at"]
        recorded.append(f"<{event.payload['message_id']}@dsr.fabconnect.example>")
    assert delivered == sorted(recorded)  # every mail delivered once and recorded once


def test_a_mail_failing_in_a_chunk_records_none_of_it_and_the_next_run_sends_each(
    chunk_ledger, clock, tmp_path, monkeypatch
):
    """A server without SMTPUTF8 cannot take an internationalised address: the chunk fails with that
    reason, nothing of it is recorded, and once the address is fixed every request has one notice."""
    ledger = chunk_ledger
    from include.demo.smtp_sink import SmtpSink

    server = SmtpSink(port=free_port(), mail_dir=tmp_path / "mail", smtputf8=False).start()
    monkeypatch.setenv("AIRFLOW_CONN_DSR_SMTP", smtp_connection(server.port))
    try:
        ids = [f"REQ-F{i:02d}" for i in range(16)]
        for rid in ids:
            record(ledger, rid, RECEIVED)
        address = dict.fromkeys(ids, SUBJECT_EMAIL)
        address["REQ-F05"] = "jürgen@beispiel.example"
        notices = Notices(ledger, controller=CONTROLLER, clock=clock)

        def chunk() -> None:
            with notices.sending(), ledger.batch(), notices.recorded_together(ids):
                for rid in ids:
                    notices.acknowledgement(rid, address[rid])

        with pytest.raises(TerminalError, match="SMTPUTF8"):
            chunk()
        assert not any(e.event_type == "notice.sent" for rid in ids for e in ledger.events(rid))
        first_try = len(server.messages())
        delivered = " ".join(m["Subject"] for m in server.messages())
        # REQ-F05's connection carries F01, F05, F09, F13: it stops at F05, and no connection
        # starts a mail once one has failed
        assert "REQ-F05" not in delivered
        assert "REQ-F09" not in delivered
        assert "REQ-F13" not in delivered
        address["REQ-F05"] = "juergen@beispiel.example"
        chunk()
        for rid in ids:
            assert [e.event_type for e in ledger.events(rid)].count("notice.sent") == 1
        assert len(server.messages()) == first_try + len(ids)  # at least once: the chunk again
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("setting", "refuse_after", "connections"),
    [
        pytest.param("4", 2, 2, id="a relay that takes two connections"),
        pytest.param("1", None, 1, id="DSR_SMTP_CONNECTIONS=1"),
    ],
)
def test_a_chunk_shares_the_connections_the_server_allows(
    chunk_notices, chunk_ledger, sink, monkeypatch, setting, refuse_after, connections
):
    notices, ledger = chunk_notices, chunk_ledger
    from include import settings

    monkeypatch.setattr(settings, "SMTP_CONNECTIONS", int(setting))
    ids = [f"REQ-R{i:02d}" for i in range(20)]
    for rid in ids:
        record(ledger, rid, RECEIVED)
    opened = _count_connections(monkeypatch, refuse_after)
    with notices.sending(), ledger.batch(), notices.recorded_together(ids):
        for rid in ids:
            notices.acknowledgement(rid, SUBJECT_EMAIL)
    assert len(opened) == connections
    assert len(sink.messages()) == len(ids)
    assert all([e.event_type for e in ledger.events(rid)].count("notice.sent") == 1 for rid in ids)


def test_a_session_with_an_unreachable_server_is_transient(ledger, clock, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DSR_SMTP", smtp_connection(free_port()))  # nothing listens there
    notices = Notices(ledger, controller=CONTROLLER, clock=clock)
    with pytest.raises(TransientError, match="could not be reached"), notices.sending():
        pass
