"""Helpers shared by every test package: a settable clock, free ports, a real SMTP sink behind ``dsr_smtp``."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from include.demo.smtp_sink import SmtpSink


class Clock:
    """A settable clock for :class:`Ledger` and :class:`Notices` (``clock.now = ...`` moves it)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def free_port() -> int:
    """A port where nothing listens (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def smtp_connection(port: int) -> str:
    """``AIRFLOW_CONN_DSR_SMTP`` for a plain (no TLS) SMTP server on 127.0.0.1."""
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {
                "from_email": "privacy@example.com",
                "disable_ssl": True,
                "disable_tls": True,
                "retry_limit": 0,
                "timeout": 5,
            },
        }
    )


def run_smtp_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpSink]:
    """A real SMTP server on a free port behind the ``dsr_smtp`` connection (``yield from`` it in a fixture)."""
    server = SmtpSink(port=free_port(), mail_dir=tmp_path / "mail").start()
    monkeypatch.setenv("AIRFLOW_CONN_DSR_SMTP", smtp_connection(server.port))
    yield server
    server.stop()
