"""Shared pieces of the SLA, notice and deadline tests: a clock, requests, a real SMTP sink."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from include.demo.smtp_sink import SmtpSink
from include.dsr import sla
from include.dsr.data_map import Controller
from include.dsr.ledger import Ledger, RequestRow, subject_fingerprint

SECRET = "test-secret"
SUBJECT_EMAIL = "maria.lopez@example.com"
OPS_EMAIL = "ops-desk@example.com"
CONTROLLER = Controller(
    name="Fabconnect",
    address="Fabconnect, Privacy Team, Example Street 1, 10115 Berlin, Germany",
    privacy_contact="privacy@example.com",
    supervisory_authority="You may lodge a complaint with a supervisory authority (Art. 77 GDPR) and you have "
                          "the right to an effective judicial remedy (Art. 79 GDPR).",
    automated_decisions="None.",
)


class Clock:
    """A settable clock for :class:`Ledger` and :class:`Notices`."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def record(ledger: Ledger, request_id: str, received: datetime, right: str = "access",
           jurisdiction: str = "GDPR", email: str = SUBJECT_EMAIL) -> RequestRow:
    """Record a request received at ``received`` with its computed due date."""
    return ledger.record_request(request_id, right, jurisdiction, subject_fingerprint({"email": email}, SECRET),
                                 received, sla.due_at(received, jurisdiction), dag_run_id=f"manual__{request_id}")


def days_ago(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)


def smtp_connection(port: int) -> str:
    """``AIRFLOW_CONN_DSR_SMTP`` for a plain (no TLS) server on 127.0.0.1."""
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                       "extra": {"from_email": "privacy@example.com", "disable_ssl": True, "disable_tls": True,
                                 "retry_limit": 0, "timeout": 5}})


@pytest.fixture
def sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpSink]:
    """A real SMTP server on a free port, reached through the ``dsr_smtp`` connection."""
    server = SmtpSink(port=free_port(), mail_dir=tmp_path / "mail").start()
    monkeypatch.setenv("AIRFLOW_CONN_DSR_SMTP", smtp_connection(server.port))
    yield server
    server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc))


@pytest.fixture
def ledger(tmp_path: Path, clock: Clock) -> Iterator[Ledger]:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", clock=clock)
    ledger.create_schema()
    yield ledger
    ledger.close()
