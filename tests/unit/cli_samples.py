"""Test data of the CLI and evidence tests: a ledger with known requests (facts only, @example.com
identities), a real SMTP sink behind the ``dsr_smtp`` connection, and a fake of Airflow's REST API v2.

``NOW`` is 2026-11-25 10:00 UTC. The requests:

* ``REQ-OPEN``: access, received 2026-11-02, verified, two internal units done, one partner
  owed, a counted identity pause of 2 days, an acknowledgement notice.
* ``REQ-DONE``: portability, received 2026-10-01, closed completed with a package whose
  presigned link must never leak, an Art. 19 style notify row and an exception record.
* ``REQ-LATE``: access, received 2026-09-01, still open and past its first deadline.
* ``REQ-CCPA``: access under CCPA, received 2026-11-20.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from include.dsr.ledger.api import Ledger
from tests.support import Clock
from tests.unit.sla_helpers import record

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
PACKAGE_LINK = "https://s3.example.com/exports/REQ-DONE/report.html?X-Amz-Signature=deadbeefcafe"
TOKEN = "good-token"
SUBJECT_EMAILS = ("maria.lopez@example.com", "jonas.weber@example.com", "li.chen@example.com", "sam.ortiz@example.com")


def _record(
    ledger: Ledger,
    clock: Clock,
    request_id: str,
    right: str,
    received: datetime,
    email: str,
    jurisdiction: str = "GDPR",
) -> None:
    clock.now = received + timedelta(minutes=1)
    record(ledger, request_id, received, right, jurisdiction, email, dag_run_id=f"dsr__{request_id}__1")


def build_sample_ledger(url: str) -> Ledger:
    """Create the schema and the four requests; return a ledger whose clock stays at ``NOW``.

    On SQLite the database is built once per process and copied (each ledger write commits
    to disk, and the tests need a fresh copy each).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        shutil.copyfile(_sqlite_template(), parsed.database)
        return Ledger(url, clock=Clock(NOW))
    return _build(url)


@lru_cache(maxsize=1)
def _sqlite_template() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="dsr-ledger-samples-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    _build(f"sqlite:///{folder / 'ledger.sqlite'}").close()
    return folder / "ledger.sqlite"


def _build(url: str) -> Ledger:
    clock = Clock(NOW)
    ledger = Ledger(url, clock=clock)
    ledger.create_schema()

    received = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    _record(ledger, clock, "REQ-OPEN", "access", received, SUBJECT_EMAILS[0])
    ledger.append_event("REQ-OPEN", "notice.sent", {"kind": "acknowledgement", "template": "acknowledgement"})
    ledger.append_event(
        "REQ-OPEN", "identity.verified", {"method": "logged_in_session", "verified_at": "2026-11-02T09:31:00+00:00"}
    )
    ledger.set_status("REQ-OPEN", "in_progress")
    ledger.append_event(
        "REQ-OPEN",
        "sla.paused",
        {
            "pause_no": 1,
            "reason": "asked for the order number",
            "paused_at": datetime(2026, 11, 3, 10, tzinfo=UTC),
            "counts": True,
            "prompt_limit": "2026-11-09T22:59:59+00:00",
        },
    )
    ledger.append_event(
        "REQ-OPEN",
        "sla.resumed",
        {
            "pause_no": 1,
            "reason": "order number received",
            "resumed_at": datetime(2026, 11, 5, 10, tzinfo=UTC),
            "counts": True,
            "paused_days": 2,
        },
    )
    ledger.upsert_system_result(
        "REQ-OPEN",
        "fabconnect_app.account",
        "export",
        "completed",
        record_count=3,
        evidence={"counts": {"accounts": 1, "addresses": 2}},
    )
    ledger.upsert_system_result(
        "REQ-OPEN", "fabconnect_s3", "export", "completed", record_count=0, outcome="no objects"
    )
    ledger.upsert_system_result("REQ-OPEN", "payflow", "export", "waiting", outcome="partner reference PF-1001")
    ledger.set_status("REQ-OPEN", "waiting_on_partner")

    received = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
    _record(ledger, clock, "REQ-DONE", "portability", received, SUBJECT_EMAILS[1])
    ledger.append_event(
        "REQ-DONE", "identity.verified", {"method": "email_link", "verified_at": "2026-10-01T08:05:00Z"}
    )
    ledger.upsert_system_result(
        "REQ-DONE",
        "fabconnect_app.orders",
        "export",
        "completed",
        record_count=7,
        evidence={"counts": {"orders": 7}, "legal_basis": "legal_obligation", "retain_until": "2034-12-31"},
    )
    ledger.upsert_system_result(
        "REQ-DONE", "precision_parts_gmbh", "notify", "completed", evidence={"reference": "PPG-77"}
    )
    clock.now = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
    ledger.set_package("REQ-DONE", PACKAGE_LINK, clock.now + timedelta(days=7))
    ledger.append_event(
        "REQ-DONE",
        "package.created",
        {
            "location": "s3://fabconnect-dsr-exports/REQ-DONE/",
            "files": 5,
            "manifest_sha256": "ab" * 32,
            "expires_at": (clock.now + timedelta(days=7)).isoformat(),
            "records": 7,
        },
    )
    ledger.close_request("REQ-DONE", "completed", clock.now, "7 records delivered")

    _record(ledger, clock, "REQ-LATE", "access", datetime(2026, 9, 1, 9, 0, tzinfo=UTC), SUBJECT_EMAILS[2])
    _record(
        ledger,
        clock,
        "REQ-CCPA",
        "access",
        datetime(2026, 11, 20, 9, 0, tzinfo=UTC),
        SUBJECT_EMAILS[3],
        jurisdiction="CCPA",
    )
    clock.now = NOW
    return ledger


def connection_env(url: str) -> str:
    """``AIRFLOW_CONN_DSR_LEDGER`` value pointing at ``url`` (any backend, via the extra)."""
    return json.dumps({"conn_type": "sqlite", "extra": {"sqlalchemy_url": url}})


class FakeAirflow(ThreadingHTTPServer):
    """Airflow's API v2 as far as the CLI uses it, over real HTTP on 127.0.0.1.

    Like Airflow 3.3: ``POST /auth/token`` (201, or 401 "Invalid credentials" unless
    admin/admin), bearer auth (401 without a header, 403 "Invalid JWT token" for another
    token than :data:`TOKEN`), 404 for an unknown route. ``routes`` maps ``(method, path)``
    to ``(status, body)``; a POST to ``<known DAG>/dagRuns`` echoes a queued run.
    ``failures`` maps ``(method, path)`` to answers given first, one per call, before the
    route answers (a database that is locked for a while). Every request is recorded in
    ``calls``.
    """

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[tuple[str, str], tuple[int, dict]] = {}
        self.failures: dict[tuple[str, str], list[tuple[int, dict]]] = {}
        self.calls: list[tuple[str, str, dict | None]] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeAirflow

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, method: str) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.calls.append((method, self.path, body))
        status, answer = self._route(method, path, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        if (method, path) == ("POST", "/auth/token"):
            if body == {"username": "admin", "password": "admin"}:
                return 201, {"access_token": TOKEN}
            return 401, {"detail": "Invalid credentials"}
        auth = self.headers.get("Authorization")
        if auth is None:
            return 401, {"detail": "Not authenticated"}
        if auth != f"Bearer {TOKEN}":
            return 403, {"detail": "Invalid JWT token"}
        if self.server.failures.get((method, path)):
            return self.server.failures[(method, path)].pop(0)
        if (method, path) in self.server.routes:
            return self.server.routes[(method, path)]
        if method == "POST" and path.endswith("/dagRuns") and ("GET", path.rsplit("/", 1)[0]) in self.server.routes:
            return 200, {
                "dag_run_id": body["dag_run_id"],
                "dag_id": path.split("/")[4],
                "state": "queued",
                "conf": body["conf"],
            }
        return 404, {"detail": "Not Found"}

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")


@contextmanager
def serving_fake_airflow(monkeypatch, dag_id: str) -> Iterator[FakeAirflow]:
    """A :class:`FakeAirflow` that knows ``dag_id``, with the CLI pointed at it (API URL, no
    credentials in the environment, the clock at :data:`NOW`); shut down afterwards."""
    from include.dsr.cli import context

    server = FakeAirflow()
    server.routes[("GET", f"/api/v2/dags/{dag_id}")] = (200, {"dag_id": dag_id, "is_paused": False})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    for name in (context.API_TOKEN_ENV, context.API_USER_ENV, context.API_PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(context.API_URL_ENV, server.url)
    monkeypatch.setattr(context, "now_utc", lambda: NOW)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
