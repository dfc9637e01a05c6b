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
from dataclasses import dataclass
from pathlib import Path

from include import settings
from include.demo.airflow_env import airflow_environment

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
    """``postgresql+psycopg2://…`` -> ``postgresql://…`` (what psycopg2 and Celery's result backend read)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def _server_and_name(url: str) -> tuple[str, str]:
    server, name = libpq_url(url).rsplit("/", 1)
    return server, name.split("?", 1)[0]


def ensure_database(url: str) -> None:
    """Create the metadata database named in ``url`` when the server does not have it yet."""
    import psycopg2
    from psycopg2 import sql

    server, name = _server_and_name(url)
    conn = psycopg2.connect(f"{server}/postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (the tests' throw-away metadata DBs), closing its sessions."""
    import psycopg2
    from psycopg2 import sql

    server, name = _server_and_name(url)
    conn = psycopg2.connect(f"{server}/postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def stack_environment(
    home: Path = STACK_HOME,
    metadata_url: str = METADATA_URL,
    broker_url: str = BROKER_URL,
    port: int = settings.AIRFLOW_PORT,
    base: dict | None = None,
) -> dict[str, str]:
    """The embedded demo's environment with the CeleryExecutor, PostgreSQL metadata DB and Redis broker."""
    from sqlalchemy.engine import make_url

    env = airflow_environment(home, base)
    db = make_url(metadata_url)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": "32",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{libpq_url(metadata_url)}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
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
