"""The FastAPI app of the "DSR compliance" dashboard, mounted by the plugin at ``/dsr-compliance``.

**Authentication.** Airflow does not protect plugin apps, so the app declares Airflow's own
auth dependency for every route (app-level ``dependencies``; the OpenAPI/docs routes, which
would bypass them, are disabled). ``requires_access_dag`` resolves the caller with
``get_user``: the api-server's JWT from an ``Authorization: Bearer`` header (API clients,
Prometheus) or else from the ``_token`` cookie the Airflow UI sets at login (the page is
shown in an iframe of the UI, same origin), validated by the configured auth manager. The
auth manager must then allow reading the ``dsr_sla_monitor`` DAG: who may read the SLA
monitor may read its dashboard. No token: 401; an invalid token: 403; an expired one: 401;
not allowed: 403.

**Read-only.** Only GET routes; the ledger (connection ``dsr_ledger``) is opened through
:func:`include.dsr.sla.reports.read_only_engine`. Database work runs in a thread
(``asyncio.to_thread``). No personal data: ids, rights, dates, counts, partner keys.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

from airflow.api_fastapi.core_api.security import requires_access_dag
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import inspect
from sqlalchemy.exc import OperationalError

from include import constants
from include.dsr.connections import sqlalchemy_url
from include.dsr.sla import monitor as sla_monitor
from include.dsr.sla import status as sla_status
from include.dsr.sla.reports import (
    ComplianceReport,
    OpenRequest,
    compliance_report,
    read_only_engine,
)

from . import formats
from .page import render_page

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

#: Who may read this DAG may read the dashboard (decided by Airflow's auth manager).
requires_dashboard_access = requires_access_dag(method="GET", param_dag_id=constants.DAG_SLA_MONITOR)

_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# No script at all; styles and SVG are inline; only the Airflow UI (same origin) may frame it.
_PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
StatusFilter = Literal["breached", "at_risk", "on_track"]

app = FastAPI(
    title="DSR compliance",
    description="Read-only SLA figures of data-subject requests from the DSR ledger.",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
    dependencies=[Depends(requires_dashboard_access)],
)


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    return read_only_engine(url)


@lru_cache(maxsize=1)
def _partner_systems() -> frozenset[str]:
    return sla_status.partner_system_keys()


def _load_report() -> ComplianceReport:
    """Read the figures (blocking: call through ``asyncio.to_thread``).

    :raises HTTPException: 503 when the ledger database cannot be opened or has no tables.
    """
    engine = _engine(sqlalchemy_url(constants.CONN_LEDGER))
    try:
        ready = inspect(engine).has_table("dsr_requests")
    except OperationalError as exc:
        log.error("DSR ledger (connection %s) cannot be opened: %s", constants.CONN_LEDGER, exc.orig)
        raise HTTPException(
            503,
            detail=f"the DSR ledger (connection {constants.CONN_LEDGER!r}) cannot be opened; "
            "check the connection and that the ledger database exists",
        ) from exc
    if not ready:
        raise HTTPException(503, detail="the DSR ledger has no tables yet; the first DSR DAG run creates them")
    return compliance_report(engine, at_risk_days=sla_monitor.at_risk_days(), partner_systems=_partner_systems())


async def _report() -> ComplianceReport:
    return await asyncio.to_thread(_load_report)


def _load_retention() -> dict | None:
    """The last retention run's record in the ledger (counts per collection, next due), or None."""
    from include.dsr.ledger.api import Ledger
    from include.dsr.retention.run import last_run

    return last_run(Ledger.from_engine(_engine(sqlalchemy_url(constants.CONN_LEDGER))))


def _filtered(report: ComplianceReport, status: StatusFilter | None) -> list[OpenRequest]:
    return [row for row in report.open_requests if status is None or row.status == status]


@app.get("/", response_class=HTMLResponse, summary="The dashboard page")
async def dashboard() -> HTMLResponse:
    """Figures, breached and at-risk lists, open requests, volume and charts, as one HTML page."""
    report = await _report()
    retention = await asyncio.to_thread(_load_retention)
    body = await asyncio.to_thread(render_page, report, retention)
    return HTMLResponse(body, headers={**_HEADERS, "Content-Security-Policy": _PAGE_CSP})


@app.get("/api/summary.json", summary="Every figure of the page")
async def summary() -> JSONResponse:
    """Counts per SLA status, breached and at-risk requests, answered-in-time shares,
    median time to close and volume per right per month."""
    return JSONResponse(formats.summary_dict(await _report()), headers=_HEADERS)


@app.get("/api/retention.json", summary="The last retention run")
async def retention() -> JSONResponse:
    """Per collection what the last retention run removed, kept and when the next row falls due."""
    await _report()  # the same 503s when the ledger cannot be read
    return JSONResponse({"last_run": await asyncio.to_thread(_load_retention)}, headers=_HEADERS)


@app.get("/api/open.json", summary="Open requests")
async def open_requests(status: StatusFilter | None = None) -> JSONResponse:
    """Open requests, most urgent first; ``status`` keeps one SLA status."""
    report = await _report()
    rows = [formats.open_request_dict(row) for row in _filtered(report, status)]
    payload = {"generated_at": formats.iso(report.generated_at), "at_risk_days": report.at_risk_days, "requests": rows}
    return JSONResponse(payload, headers=_HEADERS)


@app.get("/api/open.csv", summary="Open requests as CSV", response_class=Response)
async def open_requests_csv(status: StatusFilter | None = None) -> Response:
    """The rows of ``open.json`` as CSV (``partners_owed`` joined with ``;``)."""
    report = await _report()
    headers = {**_HEADERS, "Content-Disposition": 'attachment; filename="dsr-open-requests.csv"'}
    return Response(formats.open_csv(_filtered(report, status)), media_type="text/csv; charset=utf-8", headers=headers)


@app.get("/api/open/{request_id}.json", summary="One open request")
async def open_request(request_id: str) -> JSONResponse:
    """One open request; 404 when the ledger has no open request with this id."""
    report = await _report()
    row = next((row for row in report.open_requests if row.request_id == request_id), None)
    if row is None:
        raise HTTPException(404, detail=f"no open request {request_id!r} in the ledger (closed or unknown)")
    return JSONResponse(formats.open_request_dict(row), headers=_HEADERS)


@app.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    """The figures as Prometheus gauges (text exposition format 0.0.4)."""
    report = await _report()
    return Response(formats.prometheus_text(report), media_type=formats.PROMETHEUS_CONTENT_TYPE, headers=_HEADERS)
