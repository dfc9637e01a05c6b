"""The product on Airflow's CeleryExecutor: ``make stack`` / ``make stack-down``.

The same demo world, services and DAGs as ``make demo``, but the Airflow of a production
deployment: the metadata DB on PostgreSQL, Celery with a Redis broker, two workers (one on the
default queue, one on the fan-out queue and the default queue), beside the scheduler,
dag-processor, triggerer and api-server. Use it to try the product under concurrent load
(bursts of submissions, waves, several workers); the embedded demo's SQLite metadata DB
serialises every write and stops at a handful of simultaneous triggers.

The servers are the ones already running on the machine; only their URLs are configured:
``DSR_STACK_METADATA_URL`` (a database that is created when missing) and ``DSR_STACK_BROKER_URL``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from include import settings
from include.demo.airflow_env import airflow_environment

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

STACK_HOME = Path(os.environ.get("DSR_STACK_HOME", settings.PROJECT_ROOT / ".airflow-stack"))
METADATA_URL = os.environ.get("DSR_STACK_METADATA_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/dsr_airflow")
BROKER_URL = os.environ.get("DSR_STACK_BROKER_URL", "redis://127.0.0.1:6379/3")
WORKER_CONCURRENCY = int(os.environ.get("DSR_STACK_WORKER_CONCURRENCY", "4"))
DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class Worker:
    """One Celery worker: its name, the queues it consumes and the port its log server listens on."""

    name: str
    queues: tuple[str, ...]
    log_port: int

    def command(self) -> tuple[str, ...]:
        return (
            "celery",
            "worker",
            "--queues",
            ",".join(self.queues),
            "--celery-hostname",
            f"{self.name}@%h",
            "--concurrency",
            str(WORKER_CONCURRENCY),
        )


def workers(base_log_port: int = 8793) -> tuple[Worker, ...]:
    """The stack's two workers; both take the default queue, the second also the fan-out queue."""
    return (
        Worker("worker-default", (DEFAULT_QUEUE,), base_log_port),
        Worker("worker-fanout", (settings.FANOUT_QUEUE, DEFAULT_QUEUE), base_log_port + 1),
    )


def libpq_url(url: str) -> str:
    """``postgresql+psycopg2://…`` -> ``postgresql://…`` (what Celery's result backend reads)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def _server(url: str) -> Iterator[tuple[Connection, str]]:
    """An autocommit connection to the server of ``url`` (its ``postgres`` database), and the
    quoted name of the database ``url`` names: CREATE / DROP DATABASE run outside a transaction."""
    import sqlalchemy as sa

    target = sa.engine.make_url(url)
    engine = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn, conn.dialect.identifier_preparer.quote(target.database)
    finally:
        engine.dispose()


def ensure_database(url: str) -> None:
    """Create the metadata database named in ``url`` when the server does not have it yet."""
    import sqlalchemy as sa

    with _server(url) as (conn, name):
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": sa.engine.make_url(url).database}
        ).first()
        if exists is None:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")


def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (the tests' throw-away metadata DBs), closing its sessions."""
    with _server(url) as (conn, name):
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def display_url(url: str) -> str:
    """``url`` without its password, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def stack_environment(
    home: Path = STACK_HOME,
    metadata_url: str = METADATA_URL,
    broker_url: str = BROKER_URL,
    port: int = settings.AIRFLOW_PORT,
    base: dict | None = None,
) -> dict[str, str]:
    """The embedded demo's environment with the CeleryExecutor, PostgreSQL metadata DB and Redis broker."""
    from sqlalchemy.engine import make_url

    env = airflow_environment(home, base, port=port)
    db = make_url(metadata_url)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "32",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{libpq_url(metadata_url)}",
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
            # The metadata purge reaches the metadata DB by a connection of its own.
            "AIRFLOW_CONN_DSR_AIRFLOW_METADATA": json.dumps(
                {
                    "conn_type": "postgres",
                    "host": db.host or "127.0.0.1",
                    "port": db.port or 5432,
                    "login": db.username or "postgres",
                    "password": db.password or "",
                    "schema": db.database,
                }
            ),
        }
    )
    return env
