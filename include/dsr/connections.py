"""Turn Airflow connections into clients: SQLAlchemy engines and boto3 S3 clients.

Everything is reached by connection id (``fabconnect_app``, ``fabconnect_s3``,
``dsr_ledger``, ``partner_*``), so pointing the product at real systems means changing
connections (``AIRFLOW_CONN_*`` or a secrets backend), never code.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from include.dsr.errors import TerminalError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

SQL_DRIVERS = {"sqlite": "sqlite", "postgres": "postgresql+psycopg2", "postgresql": "postgresql+psycopg2"}


def get_connection(conn_id: str):
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)


def sqlalchemy_url(conn_id: str) -> str:
    """SQLAlchemy URL of a ``sqlite`` or ``postgres`` connection.

    A ``sqlalchemy_url`` key in the connection's extra wins (any other database SQLAlchemy
    supports); ``search_path`` in the extra selects a PostgreSQL schema.
    """
    from sqlalchemy.engine import URL

    conn = get_connection(conn_id)
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return extra["sqlalchemy_url"]
    driver = SQL_DRIVERS.get(conn.conn_type)
    if driver is None:
        raise TerminalError(f"connection {conn_id!r} has type {conn.conn_type!r}; use one of {sorted(SQL_DRIVERS)} "
                            "or set 'sqlalchemy_url' in its extra")
    if driver == "sqlite":
        return f"sqlite:///{conn.host}"
    query = {"options": f"-csearch_path={extra['search_path']}"} if extra.get("search_path") else {}
    return URL.create(driver, username=conn.login or None, password=conn.password or None, host=conn.host,
                      port=conn.port, database=conn.schema or None, query=query).render_as_string(hide_password=False)


@lru_cache(maxsize=16)
def engine_for_url(url: str) -> Engine:
    """One pooled engine per URL and process."""
    from sqlalchemy import create_engine, event

    # Queries bind subject identities: keep them out of error messages (and so out of task logs).
    engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # concurrent readers + one writer
            dbapi_conn.execute("PRAGMA busy_timeout = 30000")
    return engine


def engine_for(conn_id: str) -> Engine:
    return engine_for_url(sqlalchemy_url(conn_id))


def s3_client(conn_id: str) -> Any:
    """boto3 S3 client from an ``aws`` connection (``endpoint_url`` in the extra for S3-compatible servers)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()
