"""Airflow plugin: the "DSR compliance" page in the Airflow UI.

Registers one FastAPI app (:mod:`dsr_dashboard.app`) at ``/dsr-compliance`` and a nav entry
"DSR compliance" whose relative ``href`` the UI resolves against its base URL and shows in
an iframe (``url_route``), so it works behind a proxy prefix too.

Airflow imports plugin files in every process that loads plugins, task processes included
(for macros), so this module stays light: the app (FastAPI, Airflow's API security, the
ledger queries) is imported only when the api-server asks for ``fastapi_apps``.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/dsr-compliance"
NAV_ENTRY = {
    "name": "DSR compliance",
    "href": "dsr-compliance/",
    "url_route": "dsr-compliance",
    "destination": "nav",
    "category": "browse",
}


class DsrDashboardPlugin(AirflowPlugin):
    """The "DSR compliance" dashboard: FastAPI app plus nav entry."""

    name = "dsr_dashboard"
    external_views = [NAV_ENTRY]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The dashboard app, imported on first use (by the api-server)."""
        from dsr_dashboard.app import app

        return [{"app": app, "url_prefix": URL_PREFIX, "name": "DSR compliance"}]
