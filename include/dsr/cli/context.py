"""What every ``dsr`` command needs: the Airflow API client, the ledger, the deadline in force.

The API is configured by ``--api-url`` (default ``DSR_API_URL``, else the demo's
``http://localhost:<DSR_AIRFLOW_PORT>``) and ``DSR_API_TOKEN``, or ``DSR_API_USER`` /
``DSR_API_PASSWORD`` (the demo's admin/admin by default). The ledger is the ``dsr_ledger``
connection (``AIRFLOW_CONN_DSR_LEDGER``) and the notices go through ``dsr_smtp``; outside a
configured Airflow (no ``AIRFLOW_HOME``) the demo's values from
:func:`include.demo.airflow_env.airflow_environment` fill what is missing, so ``bin/dsr``
works against ``make demo`` with no setup.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from include import constants, settings
from include.dsr.core.errors import DSRError

if TYPE_CHECKING:
    from include.dsr.cli.airflow_api import AirflowApi
    from include.dsr.ledger.api import Ledger
    from include.dsr.ledger.schema import RequestRow

API_URL_ENV = "DSR_API_URL"
API_USER_ENV = "DSR_API_USER"
API_PASSWORD_ENV = "DSR_API_PASSWORD"  # noqa: S105 - the variable's name, not its value
API_TOKEN_ENV = "DSR_API_TOKEN"  # noqa: S105 - the variable's name, not its value
LEDGER_CONN_ENV = f"AIRFLOW_CONN_{constants.CONN_LEDGER.upper()}"
# Seconds per API call: a submit may wait on a busy api-server, a status lookup should not.
API_TIMEOUT = 30.0
STATUS_API_TIMEOUT = 5.0


class CliError(DSRError):
    """A command cannot do what was asked; the message says why and what to do.

    :ivar exit_code: 1 for a failure, 2 for bad input.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def now_utc() -> datetime:
    """The current time (aware UTC); patched in tests."""
    return datetime.now(UTC)


def default_api_url() -> str:
    """``DSR_API_URL``, else the demo's api-server."""
    return os.environ.get(API_URL_ENV) or f"http://localhost:{settings.AIRFLOW_PORT}"


def make_api(base_url: str, timeout: float = API_TIMEOUT) -> AirflowApi:
    """An API client with the token from ``DSR_API_TOKEN`` or the user and password from the env."""
    from include.demo.airflow_env import DEMO_PASSWORD, DEMO_USER
    from include.dsr.cli.airflow_api import AirflowApi

    return AirflowApi(
        base_url,
        username=os.environ.get(API_USER_ENV, DEMO_USER),
        password=os.environ.get(API_PASSWORD_ENV, DEMO_PASSWORD),
        token=os.environ.get(API_TOKEN_ENV) or None,
        timeout=timeout,
        # The user sees why a command takes longer (the demo's SQLite metadata DB is locked).
        on_retry=lambda sentence: print(f"dsr: {sentence}", file=sys.stderr, flush=True),
    )


def demo_defaults() -> None:
    """Outside a configured Airflow (no ``AIRFLOW_HOME``), use the demo's home and connections.

    Every ``AIRFLOW_CONN_*`` of the demo (ledger, SMTP, ...) fills only a variable that is
    not set. With ``AIRFLOW_HOME`` set, nothing is filled: connections then come from the
    environment or that installation's secrets backend.
    """
    if "AIRFLOW_HOME" in os.environ:
        return
    from include.demo.airflow_env import airflow_environment

    demo = airflow_environment(base={})
    os.environ["AIRFLOW_HOME"] = demo["AIRFLOW_HOME"]
    for name, value in demo.items():
        if name.startswith("AIRFLOW_CONN_"):
            os.environ.setdefault(name, value)


def ledger_url() -> str:
    """SQLAlchemy URL of the ``dsr_ledger`` connection."""
    demo_defaults()
    from include.dsr.connections import sqlalchemy_url

    url = sqlalchemy_url(constants.CONN_LEDGER)
    keep_stdout_for_output()
    return url


def keep_stdout_for_output() -> None:
    """Remove the root log handler that importing Airflow attaches to stdout (at INFO).

    The CLI's stdout is its output (tables, JSON); log records then go to the remaining
    handlers, or, for warnings and errors, to stderr through :data:`logging.lastResort`.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream in (sys.stdout, sys.__stdout__):
            root.removeHandler(handler)


def open_ledger() -> Ledger:
    """The ledger, refusing a database that has no ledger (instead of creating an empty one).

    :raises CliError: the SQLite file or the ledger tables do not exist.
    """
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    from include.dsr.ledger.api import Ledger

    url = ledger_url()
    parsed = make_url(url)
    hint = f"start the demo with `make demo`, or point {LEDGER_CONN_ENV} at the ledger database"
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path in ("", ":memory:") or not Path(path).exists():
            raise CliError(f"the ledger database {path or '(in memory)'} does not exist: {hint}")
    ledger = Ledger(url, clock=lambda: now_utc())  # looked up per call: tests patch now_utc
    if not inspect(ledger.engine).has_table("dsr_requests"):
        ledger.close()
        raise CliError(f"the ledger at {parsed.render_as_string(hide_password=True)} has no ledger tables: {hint}")
    return ledger


def require_request(ledger: Ledger, request_id: str) -> RequestRow:
    """The ledger row of ``request_id``.

    :raises CliError: the ledger does not know it.
    """
    row = ledger.get_request(request_id)
    if row is None:
        raise CliError(f"request {request_id!r} is not in the ledger: check the id with `dsr list`")
    return row


def deadline_in_force(ledger: Ledger, row: RequestRow, now: datetime) -> datetime:
    """The effective due date moved by counted identity-verification pauses (:mod:`include.dsr.sla.status`)."""
    from include.dsr.sla.status import current_deadline

    return current_deadline(ledger, row, now)
