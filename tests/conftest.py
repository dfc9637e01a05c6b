"""Shared fixtures and the test session's isolated Airflow / demo environment.

``db_url`` (and its alias ``ledger_url``) run a test once per database backend:

* ``sqlite``: a fresh database file under the test's ``tmp_path``;
* ``postgres``: a fresh schema in the PostgreSQL named by ``DSR_TEST_POSTGRES_URL``
  (e.g. ``postgresql+psycopg2://postgres@127.0.0.1:5432/test``), selected through
  ``?options=-csearch_path=<schema>`` and dropped afterwards. Marked ``postgres`` and
  skipped when the variable is unset.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _free_port_block(size: int) -> int:
    """First port of ``size`` consecutive free ports, below the ephemeral range so that
    outgoing connections made during the session cannot take them first."""
    rng = random.Random(os.getpid())
    for _ in range(200):
        base = rng.randrange(20000, 32000 - size)
        if all(_is_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no block of free ports between 20000 and 32000")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# Airflow and include.settings read the environment at import time: give the test session its
# own demo dir, ports and AIRFLOW_HOME before anything imports them, so tests never touch a
# running `make demo`.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="dsr-tests-"))
os.environ["DSR_DEMO_DIR"] = str(_SESSION_DIR / "demo")
_PORTS = _free_port_block(10)  # S3 server, 8 partner simulators, SMTP sink
os.environ["DSR_S3_PORT"] = str(_PORTS)
os.environ["DSR_PARTNER_BASE_PORT"] = str(_PORTS + 1)
os.environ["DSR_SMTP_PORT"] = str(_PORTS + 9)
os.environ["DSR_AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["DSR_DEMO"] = "1"  # the demo world's public secrets are accepted
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
# Short waits so failure-mode tests finish in seconds (production defaults are minutes).
# No in-task polling before deferral, so the deferral path is what the e2e tests exercise.
os.environ.update(
    {
        "DSR_PARTNER_POLL_SECONDS": "0.5",
        "DSR_PARTNER_HTTP_TIMEOUT": "1.5",
        "DSR_PARTNER_INLINE_WAIT_SECONDS": "0",
        "DSR_TASK_RETRIES": "1",
        "DSR_TASK_RETRY_DELAY_SECONDS": "1",
    }
)

from include.demo.airflow_env import airflow_environment  # noqa: E402

os.environ.update(airflow_environment(home=_SESSION_DIR / "airflow"))

import logging  # noqa: E402

import pytest  # noqa: E402

# Airflow binds log handlers to the stream pytest was capturing when it was imported; once a test's
# capture closes, a late record (a simulator thread stopping) would print a "Logging error" trace.
logging.raiseExceptions = False
import sqlalchemy as sa  # noqa: E402

POSTGRES_URL_ENV = "DSR_TEST_POSTGRES_URL"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not os.environ.get(POSTGRES_URL_ENV), reason=f"{POSTGRES_URL_ENV} is not set"),
        ],
    ),
]


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL schema; the schema is dropped after the test."""
    base = sa.make_url(os.environ[POSTGRES_URL_ENV])
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """SQLAlchemy URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("postgres_schema_url")


@pytest.fixture
def ledger_url(db_url: str) -> str:
    """SQLAlchemy URL for a request ledger (same backends as ``db_url``)."""
    return db_url


@pytest.fixture
def ledger_on_backends(ledger_url: str) -> Iterator[Any]:
    """A request ledger with its schema, on each backend of ``db_url`` (SQLite and PostgreSQL)."""
    from include.dsr.ledger.api import Ledger

    ledger = Ledger(ledger_url)
    ledger.create_schema()
    yield ledger
    ledger.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real moto S3 server on 127.0.0.1 and a free port, shared by the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_factory(s3_endpoint: str) -> Callable[[], Any]:
    """Builds boto3 S3 clients for the moto server."""

    import boto3

    def factory() -> Any:
        return boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    return factory
