"""A real ``airflow api-server`` serving the dashboard over a seeded ledger (tests/e2e/test_dashboard.py).

The server (:func:`tests.e2e.api_server.running_api_server`) runs with the test session's
Airflow home and metadata DB (tests/conftest.py) and the plugin from the project's plugins
folder; only its ``dsr_ledger`` connection differs: a SQLite ledger of its own, seeded with
known requests, so that the figures are exact whatever the DAG tests of the session wrote
to the session ledger. Deadlines are set relative to today (controller time), so days left
are known.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

from include.demo.airflow_env import DEMO_PASSWORD, DEMO_USER
from include.dsr.ledger.api import Ledger, subject_fingerprint
from include.dsr.sla import deadlines as sla
from include.dsr.sla import status as sla_status
from tests.e2e.api_server import LOG_NAME, running_api_server

PREFIX = "/dsr-compliance"
PARTNER = sorted(sla_status.partner_system_keys())[0]
# (request_id, right, received days ago, due in days from today)
OPEN = [("E2E-BREACHED", "portability", 40, -5), ("E2E-AT-RISK", "erasure", 27, 3), ("E2E-ON-TRACK", "access", 2, 28)]
# (request_id, right, received days ago, closed days after receipt, closing status); due 30 days after receipt
CLOSED = [
    ("E2E-CLOSED-1", "access", 100, 10, "completed"),
    ("E2E-CLOSED-2", "erasure", 200, 60, "completed"),
    ("E2E-CLOSED-3", "restriction", 150, 20, "refused"),
]


def today() -> date:
    """Today in the controller's time zone (the calendar deadlines are counted in)."""
    return datetime.now(sla.CONTROLLER_TZ).date()


def _due_in(days: int) -> datetime:
    return sla.end_of_day(today() + timedelta(days=days))


@dataclass
class Seeded:
    """What :func:`seed_ledger` recorded: received_at and due_at per request id."""

    received: dict[str, datetime]
    due: dict[str, datetime]


def seed_ledger(path: Path, now: datetime) -> Seeded:
    """Record the known requests (``OPEN`` and ``CLOSED``) in a new SQLite ledger at ``path``."""
    seeded = Seeded({}, {})
    received, due = seeded.received, seeded.due
    with Ledger(f"sqlite:///{path}") as ledger:
        ledger.create_schema()
        for request_id, right, ago, due_in in OPEN:
            received[request_id], due[request_id] = now - timedelta(days=ago), _due_in(due_in)
            fingerprint = subject_fingerprint({"email": f"{request_id.lower()}@example.com"}, "e2e")
            ledger.record_request(request_id, right, "GDPR", fingerprint, received[request_id], due[request_id])
        ledger.upsert_system_result("E2E-BREACHED", PARTNER, "export", "waiting")
        ledger.upsert_system_result("E2E-AT-RISK", PARTNER, "notify", "completed")
        for request_id, right, ago, took, status in CLOSED:
            received[request_id] = now - timedelta(days=ago)
            fingerprint = subject_fingerprint({"email": f"{request_id.lower()}@example.com"}, "e2e")
            due[request_id] = received[request_id] + timedelta(days=30)
            ledger.record_request(request_id, right, "GDPR", fingerprint, received[request_id], due[request_id])
            ledger.close_request(request_id, status, received[request_id] + timedelta(days=took), status)
    return seeded


@dataclass
class Dashboard:
    """A running api-server with the dashboard, a valid token, and the seeded requests."""

    base: str
    token: str
    seeded: Seeded
    log: Path

    def get(self, route: str, **kwargs) -> httpx.Response:
        """GET a dashboard route without credentials unless ``kwargs`` give some."""
        return httpx.get(f"{self.base}{PREFIX}{route}", timeout=30, **kwargs)

    def get_auth(self, route: str, **kwargs) -> httpx.Response:
        """GET a dashboard route with the token as a bearer header."""
        return self.get(route, headers={"Authorization": f"Bearer {self.token}"}, **kwargs)


@contextmanager
def running_dashboard(workdir: Path) -> Iterator[Dashboard]:
    """Seed a ledger in ``workdir``, start ``airflow api-server`` on it, log in, stop it at exit."""
    seeded = seed_ledger(workdir / "ledger.sqlite", datetime.now(UTC))
    ledger_conn = json.dumps({"conn_type": "sqlite", "host": str(workdir / "ledger.sqlite")})
    with running_api_server(workdir, {"AIRFLOW_CONN_DSR_LEDGER": ledger_conn}) as base:
        login = httpx.post(f"{base}/auth/token", json={"username": DEMO_USER, "password": DEMO_PASSWORD}, timeout=30)
        if login.status_code != 201:
            raise RuntimeError(f"login as {DEMO_USER} failed: {login.status_code} {login.text}")
        yield Dashboard(base, login.json()["access_token"], seeded, workdir / LOG_NAME)
