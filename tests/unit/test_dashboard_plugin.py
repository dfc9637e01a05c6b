"""The "DSR compliance" plugin in-process: page, charts and formats; the app's wiring.

The full path (a real api-server, tokens, a browser) is in tests/e2e/test_dashboard.py.
"""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from include.dsr.ledger.schema import RIGHTS
from include.dsr.sla.kpis import WindowShare
from include.dsr.sla.reports import ComplianceReport, MonthlyVolume, OpenRequest
from plugins.dsr_dashboard import app as app_module
from plugins.dsr_dashboard import formats
from plugins.dsr_dashboard.page import render_page

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def _open(request_id: str, status: str, days_left: int, owed: tuple[str, ...] = ()) -> OpenRequest:
    return OpenRequest(
        request_id=request_id,
        right="erasure",
        jurisdiction="GDPR",
        ledger_status="waiting_on_partner",
        received_at=datetime(2026, 5, 4, 9, tzinfo=UTC),
        due_at=datetime(2026, 6, 4, 21, 59, 59, tzinfo=UTC),
        extended=False,
        paused=False,
        days_left=days_left,
        status=status,
        partners_owed=owed,
    )


def _report(open_requests: tuple[OpenRequest, ...], volume_counts: dict[str, int], answered: int) -> ComplianceReport:
    months = [f"2025-{m:02d}" for m in range(7, 13)] + [f"2026-{m:02d}" for m in range(1, 7)]
    volume = tuple(
        MonthlyVolume(month, {right: volume_counts.get(right, 0) if month == "2026-05" else 0 for right in RIGHTS})
        for month in months
    )
    shares = {"1m": WindowShare("1m", answered, answered + 1), "3m": WindowShare("3m", answered, answered)}
    return ComplianceReport(
        generated_at=NOW,
        at_risk_days=7,
        open_requests=open_requests,
        volume=volume,
        shares=shares,
        answered=answered,
        median_days_to_close=12.25 if answered else None,
        closed_by_status={"completed": answered} if answered else {},
    )


@pytest.fixture
def report() -> ComplianceReport:
    rows = (
        _open("R-<b>1</b>", "breached", -11, ("partner_a", "partner_b")),
        _open("R-2", "at_risk", 3),
        _open("R-3", "on_track", 20),
    )
    return _report(rows, {"erasure": 2, "access": 1}, answered=3)


@pytest.fixture
def empty() -> ComplianceReport:
    return _report((), {}, answered=0)


def test_page_shows_the_figures_and_escapes_every_value(report: ComplianceReport) -> None:
    html = render_page(report)
    assert "<title>DSR compliance</title>" in html
    assert "<b>1</b>" not in html
    assert html.count("R-&lt;b&gt;1&lt;/b&gt;") >= 3
    assert "Breached (1)" in html
    assert "At risk (1)" in html
    assert "Open requests (3)" in html
    assert "75.0 %" in html
    assert "100.0 %" in html
    assert "12.2 days" in html
    assert "partner_a, partner_b" in html
    assert "<script" not in html  # the page runs under a CSP without scripts


def test_page_of_an_empty_ledger(empty: ComplianceReport) -> None:
    html = render_page(empty)
    assert "No breached request." in html
    assert "No request at risk." in html
    assert "No open request." in html
    assert "No open requests." in html  # the days-left chart
    assert "No request received in these months." in html
    assert "0.0 %" in html
    assert "over 0 answered requests" in html


def test_open_csv(report: ComplianceReport) -> None:
    rows = list(csv.DictReader(io.StringIO(formats.open_csv(report.open_requests))))
    assert tuple(rows[0]) == formats.CSV_COLUMNS
    assert rows[0] | {"due_at": "", "received_at": ""} == {
        "request_id": "R-<b>1</b>",
        "right": "erasure",
        "jurisdiction": "GDPR",
        "ledger_status": "waiting_on_partner",
        "received_at": "",
        "due_at": "",
        "extended": "false",
        "paused": "false",
        "days_left": "-11",
        "status": "breached",
        "partners_owed": "partner_a;partner_b",
    }
    assert rows[0]["due_at"] == "2026-06-04T21:59:59Z"


def test_prometheus_text_leaves_out_undefined_values(empty: ComplianceReport) -> None:
    text = formats.prometheus_text(empty)
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert len([s for s in samples if s.startswith("dsr_open_requests{")]) == len(RIGHTS) * 3
    assert 'dsr_answered_within_ratio{window="1m"} 0.0' in samples  # 0 of 1 eligible
    assert not any(s.startswith('dsr_answered_within_ratio{window="3m"}') for s in samples)  # 0 of 0: undefined
    assert not any(s.startswith("dsr_time_to_close_days_median") for s in samples)
    assert "# TYPE dsr_time_to_close_days_median gauge" in text
    assert text.endswith("\n")


def test_summary_dict(report: ComplianceReport) -> None:
    summary = formats.summary_dict(report)
    assert summary["open"] == {"total": 3, "breached": 1, "at_risk": 1, "on_track": 1}
    assert [row["request_id"] for row in summary["breached"]] == ["R-<b>1</b>"]
    assert summary["answered_within"]["1m"] == {"answered_in_time": 3, "eligible": 4, "ratio": 0.75}
    counts = dict.fromkeys(RIGHTS, 0) | {"erasure": 2, "access": 1}
    assert summary["volume"][-2] == {"month": "2026-05", "counts": counts, "total": 3}


# -- the app ----------------------------------------------------------------------------


def test_every_route_is_a_get_behind_airflow_auth() -> None:
    routes = [route for route in app_module.app.routes if isinstance(route, APIRoute)]
    assert {route.path for route in routes} == {
        "/",
        "/api/summary.json",
        "/api/open.json",
        "/api/open.csv",
        "/api/open/{request_id}.json",
        "/api/retention.json",
        "/metrics",
    }
    for route in routes:
        assert route.methods == {"GET"}, route.path
        assert app_module.requires_dashboard_access in [dep.call for dep in route.dependant.dependencies], route.path
    assert app_module.app.openapi_url is None
    assert app_module.app.docs_url is None
    assert app_module.app.redoc_url is None


def _get(path: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app_module.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
            return await client.get(path)

    return asyncio.run(call())


@pytest.fixture
def get(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[str], httpx.Response]]:
    """GET on the app in-process, authentication overridden, ``dsr_ledger`` = ``tmp_path/ledger.sqlite``."""
    monkeypatch.setattr(app_module, "sqlalchemy_url", lambda conn_id: f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    app_module.app.dependency_overrides[app_module.requires_dashboard_access] = lambda: None
    try:
        yield _get
    finally:
        app_module.app.dependency_overrides.clear()


def test_missing_ledger_database_is_503_and_not_created(get: Callable, tmp_path: Path) -> None:
    response = get("/api/summary.json")
    assert response.status_code == 503
    assert "dsr_ledger" in response.json()["detail"]
    assert not (tmp_path / "ledger.sqlite").exists()


def test_ledger_without_tables_is_503(get: Callable, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "ledger.sqlite") as conn:
        conn.execute("CREATE TABLE unrelated (id INTEGER)")
    response = get("/metrics")
    assert response.status_code == 503
    assert "no tables yet" in response.json()["detail"]


def test_page_shows_the_last_retention_run(empty: ComplianceReport) -> None:
    assert "No retention run yet." in render_page(empty)
    run = {
        "at": "2026-12-01T02:31:00+00:00",
        "collections": {
            "web_logs": {
                "deleted": 1200,
                "anonymised": 0,
                "held": 3,
                "kept_referenced": 0,
                "next_due": "2026-12-02T01:00:00",
            },
            "accounts": {"deleted": 0, "anonymised": 7, "held": 1, "kept_referenced": 0, "next_due": None},
        },
        "object_versions_deleted": 4,
        "own_copies": {"versions": 9},
    }
    html = render_page(empty, run)
    assert "Last run 2026-12-01 02:31 UTC" in html
    assert '<td>web_logs</td><td class="num">1200</td>' in html
    assert "2026-12-02" in html


def test_retention_json_gives_the_last_run(get: Callable, tmp_path: Path) -> None:
    from include.dsr.ledger.api import Ledger

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.create_schema()
    assert get("/api/retention.json").json() == {"last_run": None}
    ledger.append_event(None, "retention.dry_run", {"run_id": "dry", "would": {}})  # a dry run is not a run
    ledger.append_event(None, "retention.run", {"run_id": "r1", "collections": {"web_logs": {"deleted": 5}}})
    body = get("/api/retention.json").json()["last_run"]
    assert body["run_id"] == "r1"
    assert body["collections"] == {"web_logs": {"deleted": 5}}
    ledger.close()
