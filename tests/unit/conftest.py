"""Fixtures of the unit tests: a settable clock, a clocked SQLite ledger, a real SMTP sink."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from include.demo.smtp_sink import SmtpSink
from include.dsr.ledger.api import Ledger
from tests.support import Clock, run_smtp_sink


@pytest.fixture
def sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpSink]:
    """A real SMTP server on a free port, reached through the ``dsr_smtp`` connection."""
    yield from run_smtp_sink(tmp_path, monkeypatch)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))


@pytest.fixture
def ledger(tmp_path: Path, clock: Clock) -> Iterator[Ledger]:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", clock=clock)
    ledger.create_schema()
    yield ledger
    ledger.close()
