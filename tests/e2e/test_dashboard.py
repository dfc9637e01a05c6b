"""The "DSR compliance" dashboard served by a real ``airflow api-server``: auth, figures, browser.

One api-server per module (see :mod:`tests.e2e.dashboard_server`): a ledger of known requests,
the simple auth manager's demo login. Checks that every route refuses unauthenticated callers,
that JSON, CSV and Prometheus figures are the known ones, and renders the page (and the Airflow
UI page embedding it) in headless Debian Chromium, with screenshots under the test's tmp_path.
"""

from __future__ import annotations

import csv
import io
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from include import settings
from include.dsr.sla import deadlines as sla
from include.dsr.sla import status as sla_status
from tests.e2e.dashboard_server import (
    CLOSED,
    OPEN,
    PARTNER,
    PREFIX,
    Dashboard,
    running_dashboard,
    today,
)

pytestmark = pytest.mark.slow


def _every_route() -> list[str]:
    """Every route the plugin's app serves (a new route is covered without editing this list)."""
    from fastapi.routing import APIRoute

    from plugins.dsr_dashboard import app as app_module

    paths = [r.path for r in app_module.app.routes if isinstance(r, APIRoute)]
    return sorted(path.replace("{request_id}", "E2E-BREACHED") for path in paths)


ROUTES = _every_route()
CHROMIUM = Path("/usr/bin/chromium")
INSTALL_CHROMIUM = settings.PROJECT_ROOT / "scripts" / "install-chromium.sh"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dashboard(airflow_db, tmp_path_factory) -> Iterator[Dashboard]:
    with running_dashboard(tmp_path_factory.mktemp("dashboard")) as running:
        yield running


def _month(moment: datetime) -> str:
    return moment.astimezone(sla.CONTROLLER_TZ).strftime("%Y-%m")


def _days_left(dashboard: Dashboard, request_id: str) -> int:
    """Days left of a seeded open request, as of now (controller calendar)."""
    return (dashboard.seeded.due[request_id].astimezone(sla.CONTROLLER_TZ).date() - today()).days


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _expected_open(dashboard: Dashboard, request_id: str) -> dict:
    right = next(r for rid, r, _, _ in OPEN if rid == request_id)
    days_left = _days_left(dashboard, request_id)
    return {
        "request_id": request_id,
        "right": right,
        "jurisdiction": "GDPR",
        "ledger_status": "received",
        "received_at": _iso(dashboard.seeded.received[request_id]),
        "due_at": _iso(dashboard.seeded.due[request_id]),
        "extended": False,
        "paused": False,
        "days_left": days_left,
        "status": "breached" if days_left < 0 else "at_risk" if days_left < 7 else "on_track",
        "partners_owed": [PARTNER] if request_id == "E2E-BREACHED" else [],
    }


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_unauthenticated_requests_are_refused(dashboard: Dashboard, route: str) -> None:
    response = dashboard.get(route)
    assert response.status_code == 401, response.text
    assert "E2E-" not in response.text


@pytest.mark.parametrize(
    ("credentials", "status"),
    [
        pytest.param({"headers": {"Authorization": "Bearer not-a-jwt"}}, 403, id="invalid bearer token"),
        pytest.param({"cookies": {"_token": "not-a-jwt"}}, 403, id="invalid token cookie"),
        pytest.param({"headers": {"Authorization": "Basic YWRtaW46YWRtaW4="}}, 401, id="basic auth is not accepted"),
    ],
)
@pytest.mark.parametrize("route", ["/", "/api/summary.json", "/metrics"])
def test_bad_credentials_are_refused(dashboard: Dashboard, route: str, credentials: dict, status: int) -> None:
    response = dashboard.get(route, **credentials)
    assert response.status_code == status, response.text
    assert "E2E-" not in response.text


def test_token_from_the_ui_cookie_or_a_bearer_header_is_accepted(dashboard: Dashboard) -> None:
    assert dashboard.get("/api/summary.json", cookies={"_token": dashboard.token}).status_code == 200
    assert dashboard.get_auth("/api/summary.json").status_code == 200


@pytest.mark.parametrize("route", ["/docs", "/openapi.json", "/redoc"])
def test_no_unprotected_documentation_routes(dashboard: Dashboard, route: str) -> None:
    assert dashboard.get_auth(route).status_code == 404


def test_read_only_no_write_method(dashboard: Dashboard) -> None:
    response = httpx.post(f"{dashboard.base}{PREFIX}/", headers={"Authorization": f"Bearer {dashboard.token}"})
    assert response.status_code == 405


def test_nav_entry_is_registered_with_a_relative_href(dashboard: Dashboard) -> None:
    response = httpx.get(f"{dashboard.base}/api/v2/plugins", headers={"Authorization": f"Bearer {dashboard.token}"})
    plugin = next(p for p in response.json()["plugins"] if p["name"] == "dsr_dashboard")
    assert plugin["fastapi_apps"] == [
        {"app": "fastapi.applications.FastAPI", "url_prefix": PREFIX, "name": "DSR compliance"}
    ]
    view = plugin["external_views"][0]
    assert (view["name"], view["href"], view["url_route"]) == ("DSR compliance", "dsr-compliance/", "dsr-compliance")


# -- figures ------------------------------------------------------------------------------


def test_summary_json_has_the_known_figures(dashboard: Dashboard) -> None:
    summary = dashboard.get_auth("/api/summary.json").json()
    assert summary["open"] == {"total": 3, "breached": 1, "at_risk": 1, "on_track": 1}
    assert summary["breached"] == [_expected_open(dashboard, "E2E-BREACHED")]
    assert summary["at_risk"] == [_expected_open(dashboard, "E2E-AT-RISK")]
    assert summary["at_risk_days"] == sla_status.DEFAULT_AT_RISK_DAYS
    assert summary["answered"] == 3
    assert summary["closed_by_status"] == {"completed": 2, "refused": 1}
    # 1m: CLOSED-1 and -3 in time, CLOSED-2 late, E2E-BREACHED past its deadline unanswered.
    assert summary["answered_within"] == {
        "1m": {"answered_in_time": 2, "eligible": 4, "ratio": 0.5},
        "3m": {"answered_in_time": 3, "eligible": 3, "ratio": 1.0},
    }
    assert summary["median_days_to_close"] == 20.0  # of 10, 20 and 60 days
    expected_volume: dict[str, dict[str, int]] = {}
    for request_id, right, *_ in OPEN + CLOSED:
        month = expected_volume.setdefault(_month(dashboard.seeded.received[request_id]), {})
        month[right] = month.get(right, 0) + 1
    volume = {m["month"]: {r: n for r, n in m["counts"].items() if n} for m in summary["volume"] if m["total"]}
    assert volume == expected_volume
    assert len(summary["volume"]) == 12


def test_open_json_and_one_request(dashboard: Dashboard) -> None:
    rows = dashboard.get_auth("/api/open.json").json()["requests"]
    assert rows == [_expected_open(dashboard, rid) for rid in ("E2E-BREACHED", "E2E-AT-RISK", "E2E-ON-TRACK")]
    at_risk = dashboard.get_auth("/api/open.json", params={"status": "at_risk"}).json()["requests"]
    assert [row["request_id"] for row in at_risk] == ["E2E-AT-RISK"]
    assert dashboard.get_auth("/api/open.json", params={"status": "late"}).status_code == 422
    assert dashboard.get_auth("/api/open/E2E-BREACHED.json").json() == _expected_open(dashboard, "E2E-BREACHED")


@pytest.mark.parametrize("request_id", ["E2E-CLOSED-1", "NO-SUCH-REQUEST"])
def test_closed_or_unknown_request_is_404(dashboard: Dashboard, request_id: str) -> None:
    response = dashboard.get_auth(f"/api/open/{request_id}.json")
    assert response.status_code == 404
    assert request_id in response.json()["detail"]


def test_open_csv(dashboard: Dashboard) -> None:
    response = dashboard.get_auth("/api/open.csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["request_id"], r["status"], int(r["days_left"]), r["partners_owed"]) for r in rows] == [
        ("E2E-BREACHED", "breached", _days_left(dashboard, "E2E-BREACHED"), PARTNER),
        ("E2E-AT-RISK", "at_risk", _days_left(dashboard, "E2E-AT-RISK"), ""),
        ("E2E-ON-TRACK", "on_track", _days_left(dashboard, "E2E-ON-TRACK"), ""),
    ]
    assert rows[0]["due_at"] == _iso(dashboard.seeded.due["E2E-BREACHED"])


def test_prometheus_metrics(dashboard: Dashboard) -> None:
    response = dashboard.get_auth("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = dict(line.rsplit(" ", 1) for line in response.text.splitlines() if line and not line.startswith("#"))
    assert samples['dsr_open_requests{right="portability",status="breached"}'] == "1"
    assert samples['dsr_open_requests{right="erasure",status="at_risk"}'] == "1"
    assert samples['dsr_open_requests{right="access",status="on_track"}'] == "1"
    assert samples['dsr_open_requests{right="access",status="breached"}'] == "0"
    assert sum(int(v) for k, v in samples.items() if k.startswith("dsr_open_requests{")) == 3
    assert float(samples['dsr_answered_within_ratio{window="1m"}']) == 0.5
    assert float(samples['dsr_answered_within_ratio{window="3m"}']) == 1.0
    assert float(samples["dsr_time_to_close_days_median"]) == 20.0
    assert "# TYPE dsr_open_requests gauge" in response.text


# -- real browser ---------------------------------------------------------------------------


def _chromium_or_skip() -> Path:
    """Debian's chromium, installed by scripts/install-chromium.sh if it is missing."""
    if not CHROMIUM.exists():
        result = subprocess.run(["bash", str(INSTALL_CHROMIUM)], capture_output=True, text=True, timeout=900)
        if not CHROMIUM.exists():
            pytest.skip(
                f"{CHROMIUM} is missing and {INSTALL_CHROMIUM.name} could not install it "
                f"(exit {result.returncode}): {result.stderr.strip()[-300:]}"
            )
    return CHROMIUM


def test_dashboard_page_in_headless_chromium(dashboard: Dashboard, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = _chromium_or_skip()
    page_png, ui_png = tmp_path / "dsr-compliance.png", tmp_path / "airflow-ui-dsr-compliance.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            # Logged in the way the Airflow UI is: the api-server's JWT in the `_token` cookie.
            browser.add_cookies([{"name": "_token", "value": dashboard.token, "url": dashboard.base}])
            page = browser.new_page()
            response = page.goto(f"{dashboard.base}{PREFIX}/", wait_until="load")
            assert response is not None
            assert response.status == 200
            page.screenshot(path=str(page_png), full_page=True)
            text = page.inner_text("body")
            # The nav entry's page in the Airflow UI shows the dashboard in an iframe.
            page.goto(f"{dashboard.base}/plugin/dsr-compliance", wait_until="load")
            frame = page.frame_locator("iframe[title='DSR compliance']")
            frame.locator("h1", has_text="DSR compliance").wait_for(timeout=60_000)
            page.screenshot(path=str(ui_png))
        finally:
            browser.close()
    assert "DSR compliance" in text
    for request_id, *_ in OPEN:
        assert request_id in text
    assert "Breached (1)" in text
    assert "At risk (1)" in text
    assert "50.0 %" in text
    assert "20.0 days" in text
    for png in (page_png, ui_png):
        data = png.read_bytes()
        assert data[:8] == PNG_SIGNATURE, png
        assert len(data) > 20_000, png
