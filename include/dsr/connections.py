"""Turn Airflow connections and Variables into clients: SQLAlchemy engines, S3, SMTP.

Everything is reached by connection id (``fabconnect_app``, ``fabconnect_s3``,
``dsr_ledger``, ``dsr_smtp``, ``partner_*``), so pointing the product at real systems
means changing connections (``AIRFLOW_CONN_*`` or a secrets backend), never code. This
module and :mod:`include.dsr.orchestration` are the only parts of the engine that import
Airflow; everything else receives the clients built here.
"""

from __future__ import annotations

import os
import smtplib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from include.dsr.core.errors import TerminalError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

POSTGRES_TYPES = ("postgres", "postgresql")
# Extras of ours that are not driver arguments: a whole URL, or the schema to use.
OWN_EXTRAS = ("sqlalchemy_url", "search_path")


def get_connection(conn_id: str):
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)


def variable(name: str, default: str) -> str:
    """An Airflow Variable (``AIRFLOW_VAR_<NAME>``, the metadata DB or a secrets backend)."""
    from airflow.sdk import Variable

    return Variable.get(name, default=default)


#: Airflow Variables holding the engine's secrets (a secrets backend serves them in production).
SECRET_VARIABLES = {"erasure_hash": "dsr_erasure_hash_secret", "fingerprint": "dsr_fingerprint_secret"}


def secret(name: str) -> str:
    """One of the engine's secrets (``erasure_hash``, ``fingerprint``).

    From the Airflow Variable in :data:`SECRET_VARIABLES` (``AIRFLOW_VAR_<NAME>``, the metadata DB
    or a secrets backend), else ``DSR_<NAME>_SECRET`` in the environment. The demo's public values
    are accepted only in the embedded demo (``DSR_DEMO=1``).

    :raises TerminalError: no secret is configured, or it is a public demo value outside the demo.
    """
    from include import settings

    demo = {"erasure_hash": settings.DEMO_ERASURE_HASH_SECRET, "fingerprint": settings.DEMO_FINGERPRINT_SECRET}
    fallback = {"erasure_hash": settings.ERASURE_HASH_SECRET, "fingerprint": settings.FINGERPRINT_SECRET}
    name_of = SECRET_VARIABLES[name]
    value = variable(name_of, "") or fallback[name]
    if not value and settings.demo_mode():
        value = demo[name]
    if not value or (value == demo[name] and not settings.demo_mode()):
        raise TerminalError(
            f"the {name.replace('_', ' ')} secret is not configured (or is the public demo value): set the Airflow "
            f"Variable {name_of} in your secrets backend or as AIRFLOW_VAR_{name_of.upper()}, a long random "
            "value that never changes (the ledger and the suppression list depend on it)"
        )
    return value


def sqlalchemy_url(conn_id: str) -> str:
    """SQLAlchemy URL of a ``sqlite`` or ``postgres`` connection.

    A ``sqlalchemy_url`` key in the connection's extra wins (any other database SQLAlchemy
    supports). PostgreSQL URLs come from the provider's ``PostgresHook.sqlalchemy_url``,
    with every other extra (``sslmode``, ``sslrootcert``, ``application_name``, ...) added
    as a driver argument, the way the hook's own ``get_conn`` passes them, and
    ``search_path`` turned into the ``options`` that select the schema.
    """
    conn = get_connection(conn_id)
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return extra["sqlalchemy_url"]
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    if conn.conn_type in POSTGRES_TYPES:
        return _postgres_url(conn_id, extra)
    raise TerminalError(
        f"connection {conn_id!r} has type {conn.conn_type!r}; use sqlite or postgres, "
        "or set 'sqlalchemy_url' in its extra"
    )


def _postgres_url(conn_id: str, extra: dict[str, Any]) -> str:
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=conn_id)
    driver_args = {
        key: str(value)
        for key, value in extra.items()
        if key not in hook.ignored_extra_options and key not in OWN_EXTRAS
    }
    if extra.get("search_path"):
        driver_args["options"] = f"-csearch_path={extra['search_path']}"
    url = hook.sqlalchemy_url.update_query_dict(driver_args)
    return url.render_as_string(hide_password=False)


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


class LazyClient:
    """A client made on its first use, then that one client for every use (threads included).

    A task process builds its resources afresh, and an S3 client costs it something even from
    a preloaded session (see :func:`s3_client`); most of a request's tasks never touch the
    store, so they never pay it.
    """

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make, self._client, self._lock = make, None, threading.Lock()

    @property
    def made(self) -> bool:
        return self._client is not None

    def __getattr__(self, name: str) -> Any:  # only for what the proxy itself lacks
        if name.startswith("__"):  # copy, pickle and hasattr probes: not the client's to answer
            raise AttributeError(name)
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make()
        return getattr(self._client, name)


#: boto3 sessions are not thread-safe: clients are made from the shared one one at a time.
_SESSION_LOCK = threading.Lock()


def _new_session_lock() -> None:
    """A forked process gets a free lock: another thread may have held the parent's at the fork."""
    global _SESSION_LOCK
    _SESSION_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_session_lock)

#: Session settings a connection with static keys holds, each passed to the client instead.
_PASSED_EXPLICITLY = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "region_name"}


def s3_client(conn_id: str) -> Any:
    """boto3 S3 client from an ``aws`` connection (``endpoint_url`` in the extra for S3-compatible servers).

    A connection with static keys (login / password, or the ``aws_access_key_id`` extras) gets a
    client of boto3's default session, which the processes that fork tasks load the S3 service
    model into once (:mod:`include.dsr.orchestration.preload`): 4 ms per task process, where the
    provider hook's own session costs 0.33 s of CPU, in each task that touches the store. Roles to
    assume, profiles and session settings keep the hook's session, which knows them.
    """
    hook, args = _hook_and_client_args(conn_id)
    return s3_client_from(args) if args is not None else hook.get_conn()


def s3_client_args(conn_id: str) -> dict[str, Any] | None:
    """What :func:`s3_client_from` makes a client of this connection with, or None when only the
    provider hook's session can (roles, profiles, other session settings)."""
    return _hook_and_client_args(conn_id)[1]


def _hook_and_client_args(conn_id: str) -> tuple[Any, dict[str, Any] | None]:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=conn_id)
    conf = hook.conn_config
    if (
        not (conf.aws_access_key_id and conf.aws_secret_access_key)
        or conf.role_arn
        or conf.profile_name
        or set(conf.session_kwargs) - _PASSED_EXPLICITLY
    ):
        return hook, None
    return hook, {
        "region_name": conf.region_name,
        "endpoint_url": conf.get_service_endpoint_url("s3"),
        "aws_access_key_id": conf.aws_access_key_id,
        "aws_secret_access_key": conf.aws_secret_access_key,
        "aws_session_token": conf.aws_session_token,
        "config": conf.botocore_config,
        "verify": conf.verify,
    }


def s3_client_from(args: dict[str, Any]) -> Any:
    """A client of boto3's default session (no Airflow call: a forked process can make one)."""
    with _SESSION_LOCK:
        return default_boto3_session().client("s3", **args)


def default_boto3_session() -> Any:
    """boto3's default session (made on first use); clients made from it share its loaded models."""
    import boto3

    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    return boto3.DEFAULT_SESSION


@contextmanager
def smtp_client(conn_id: str) -> Iterator[tuple[smtplib.SMTP, str | None]]:
    """A logged-in ``smtplib`` client and the connection's ``from_email``, from the SMTP provider's hook.

    The connection's extra sets ``from_email``, ``disable_ssl``, ``disable_tls``,
    ``timeout`` and ``retry_limit`` as for ``SmtpHook``. Errors reaching the server
    (``OSError``, ``smtplib.SMTPException``) propagate for the caller to classify.

    :raises TerminalError: the connection does not exist or cannot be used.
    """
    from airflow.providers.smtp.hooks.smtp import SmtpHook
    from airflow.sdk.exceptions import AirflowException

    hook = SmtpHook(smtp_conn_id=conn_id)
    try:
        hook.get_conn()
    except AirflowException as exc:
        raise TerminalError(
            f"SMTP connection {conn_id!r} is missing or unusable ({exc}); define it (AIRFLOW_CONN_{conn_id.upper()})"
        ) from exc
    try:
        # The hook keeps its client private; its own test_connection reads it the same way.
        client = hook._smtp_client
        if not isinstance(client, smtplib.SMTP):
            raise TerminalError(f"SMTP connection {conn_id!r} gave no synchronous SMTP client")
        yield client, hook.from_email
    finally:
        hook.__exit__(None, None, None)
