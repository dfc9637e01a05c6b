"""A tiny client of Airflow's REST API v2 with token auth (standard library only).

Used by the ``dsr`` CLI and by ``make demo``'s sample requests. A token comes ready
(``token=``) or from ``POST /auth/token`` with a user name and password, fetched on the
first call. Every failure is raised as an :class:`AirflowApiError` subclass whose
message says what failed and what to do: the CLI prints it as it is.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from functools import cached_property
from http.client import HTTPException
from typing import Any

from include.dsr.core.errors import DSRError

log = logging.getLogger(__name__)


class AirflowApiError(DSRError):
    """A call to Airflow's REST API failed.

    :ivar status: HTTP status code, or None when no answer came.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiUnreachableError(AirflowApiError):
    """Nothing answers at the API's URL (Airflow stopped, wrong URL or port)."""


class ApiAuthError(AirflowApiError):
    """The credentials or the token were refused (401, or 403 "Invalid JWT token")."""


class ApiNotFoundError(AirflowApiError):
    """The DAG or DAG run does not exist (404)."""


class AirflowApi:
    """REST API v2 client.

    :param base_url: e.g. ``http://localhost:8080``.
    :param username: user for ``POST /auth/token`` (ignored when ``token`` is given).
    :param password: that user's password.
    :param token: a ready JWT; skips the login.
    :param timeout: seconds per HTTP call.
    :param retries: how often a transient failure (:func:`_is_transient`) is retried.
    :param backoff: seconds before the first retry, doubled for each next one.
    :param on_retry: told each retry in a sentence (default: a warning in the log).
    """

    # Override to use another login route (``/auth/token`` of the simple auth manager and FAB).
    token_path = "/auth/token"  # noqa: S105 - a URL path, not a password

    def __init__(
        self,
        base_url: str,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 30,
        retries: int = 5,
        backoff: float = 0.5,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise AirflowApiError(f"Airflow API URL {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self._token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._on_retry = on_retry or log.warning

    @cached_property
    def token(self) -> str:
        """The bearer token: the one given, or a fresh one from the login route."""
        if self._token:
            return self._token
        if not self.username or not self._password:
            raise ApiAuthError(
                f"Airflow API at {self.base_url}: no token and no user/password to log in with; "
                "set DSR_API_TOKEN, or DSR_API_USER and DSR_API_PASSWORD"
            )
        body = {"username": self.username, "password": self._password}
        return self._request("POST", self.token_path, body, auth=False)["access_token"]

    # -- HTTP -----------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: dict | None = None, auth: bool = True, query: dict[str, Any] | None = None
    ) -> dict:
        url = f"{self.base_url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - scheme checked in __init__
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - configured API URL
                    return json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as exc:
                body = _body(exc)
                if attempt < self.retries and _is_transient(exc.code, body):
                    delay = self.backoff * 2**attempt
                    self._on_retry(
                        f"Airflow API at {self.base_url}: {method} {path} answered {exc.code} "
                        f"({_detail(exc, body)}); retrying in {delay:.1f} s ({attempt + 1}/{self.retries})"
                    )
                    time.sleep(delay)
                    continue
                raise self._http_error(exc, body, method, path, auth) from exc
            except (urllib.error.URLError, ConnectionError, TimeoutError, HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                log.debug("Airflow API %s %s failed: %s", method, path, reason)
                raise ApiUnreachableError(
                    f"Airflow API at {self.base_url} is not reachable: start it with `make demo` ({reason})"
                ) from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _http_error(
        self, exc: urllib.error.HTTPError, body: Any, method: str, path: str, auth: bool
    ) -> AirflowApiError:
        detail = _detail(exc, body)
        where = f"Airflow API at {self.base_url}"
        if exc.code == 401 and not auth:
            return ApiAuthError(
                f"{where} refused the credentials of user {self.username!r} (401 {detail}): "
                "check DSR_API_USER and DSR_API_PASSWORD",
                exc.code,
            )
        if exc.code == 401 or (exc.code == 403 and "token" in detail.lower()):
            return ApiAuthError(
                f"{where} refused the token ({exc.code} {detail}): check DSR_API_TOKEN, or unset "
                "it to log in with DSR_API_USER and DSR_API_PASSWORD",
                exc.code,
            )
        if exc.code == 403:
            return ApiAuthError(
                f"{where}: user {self.username or '(token)'} may not {method} {path} (403 {detail}): "
                "ask an Airflow admin for the permission",
                exc.code,
            )
        if exc.code == 404:
            return ApiNotFoundError(f"{where}: {method} {path} not found (404 {detail})", exc.code)
        return AirflowApiError(f"{where}: {method} {path} failed ({exc.code} {detail})", exc.code)

    # -- DAGs and runs --------------------------------------------------------------------

    def get_dag(self, dag_id: str) -> dict:
        """The DAG's details (``is_paused``, ...).

        :raises ApiNotFoundError: Airflow does not know the DAG (not deployed or not parsed yet).
        """
        return self._request("GET", f"/api/v2/dags/{_quote(dag_id)}")

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Wait until the dag-processor has registered ``dag_id``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get_dag(dag_id)
                return
            except ApiNotFoundError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def trigger_run(self, dag_id: str, conf: dict, run_id: str | None = None, note: str | None = None) -> dict:
        """Create a manual run (queued; the scheduler starts it) and return the run's details.

        :param run_id: the run id; default: Airflow's ``manual__<time>``.
        :raises ApiNotFoundError: no such DAG.
        :raises AirflowApiError: 400 (conf refused by the DAG's params) or 409 (run id taken).
        """
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        return self._request("POST", f"/api/v2/dags/{_quote(dag_id)}/dagRuns", body)

    def trigger(self, dag_id: str, conf: dict) -> str:
        """Unpause ``dag_id``, trigger a run and return its run id (the demo's shortcut)."""
        self._request("PATCH", f"/api/v2/dags/{_quote(dag_id)}", {"is_paused": False})
        return self.trigger_run(dag_id, conf)["dag_run_id"]

    def get_run(self, dag_id: str, run_id: str) -> dict:
        """The run's details (``state``, ``conf``, ``queued_at``, ...)."""
        return self._request("GET", f"/api/v2/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """The run's task instances (``task_id``, ``map_index``, ``state``, ``try_number``, ...)."""
        path = f"/api/v2/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}/taskInstances"
        return self._request("GET", path, query={"limit": 1000})["task_instances"]

    def delete_run(self, dag_id: str, run_id: str) -> None:
        """Delete a run (e.g. one submitted by mistake that has not started)."""
        self._request("DELETE", f"/api/v2/dags/{_quote(dag_id)}/dagRuns/{_quote(run_id)}")

    def run_state(self, dag_id: str, run_id: str) -> str:
        """``queued``, ``running``, ``success`` or ``failed``."""
        return self.get_run(dag_id, run_id)["state"]

    def find_runs(self, dag_id_prefix: str, conf_contains: str, limit: int = 20) -> list[dict]:
        """Runs of every DAG whose id starts with ``dag_id_prefix`` and whose conf contains a text, newest first."""
        query = {
            "dag_id_prefix_pattern": dag_id_prefix,
            "conf_contains": conf_contains,
            "order_by": "-id",
            "limit": limit,
        }
        return self._request("GET", "/api/v2/dags/~/dagRuns", query=query)["dag_runs"]


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _body(exc: urllib.error.HTTPError) -> Any:
    """The error's JSON body, or None (it can be read once only)."""
    try:
        return json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return None


def _is_transient(status: int, body: Any) -> bool:
    """A failure worth retrying: 503, or a 500 that Airflow reports as a database error.

    The embedded demo's SQLite metadata DB answers concurrent writers with "database is
    locked", which the API server turns into ``500 {"detail": {"reason": "Database error", ...}}``;
    the transaction was rolled back, so sending the same call again is safe.
    """
    if status == 503:
        return True
    return status == 500 and _reason(body) == "Database error"


def _reason(body: Any) -> str | None:
    """The ``reason`` of an error body, at the top level or inside ``detail`` (Airflow 3's shape)."""
    if not isinstance(body, dict):
        return None
    detail = body.get("detail")
    if isinstance(detail, dict) and detail.get("reason"):
        return str(detail["reason"])
    return str(body["reason"]) if body.get("reason") else None


def _detail(exc: urllib.error.HTTPError, body: Any) -> str:
    """The ``detail`` of a FastAPI error body, else its ``reason``, else the HTTP reason."""
    if not isinstance(body, dict):
        return str(exc.reason)
    if _reason(body):
        return str(_reason(body))
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # pydantic validation errors
        return "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail)
    return str(detail or exc.reason)
