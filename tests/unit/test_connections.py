"""Connections become engines: PostgreSQL through the provider's hook with every extra, errors hiding identities."""

from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from include.dsr.connections import engine_for_url, sqlalchemy_url
from include.dsr.core.errors import TerminalError
from tests.conftest import POSTGRES_URL_ENV


def test_errors_hide_bound_identities(tmp_path):
    engine = engine_for_url(f"sqlite:///{tmp_path / 'app.sqlite'}")
    with pytest.raises(OperationalError) as exc_info, engine.connect() as conn:
        conn.execute(text("SELECT * FROM missing_table WHERE email = :email"), {"email": "maria.lopez@example.com"})
    assert "maria.lopez@example.com" not in str(exc_info.value)
    assert "missing_table" in str(exc_info.value)  # the error itself is still readable


def _postgres_connection(extra: dict) -> str:
    """``AIRFLOW_CONN_*`` value of a ``postgres`` connection to the test server."""
    base = make_url(os.environ[POSTGRES_URL_ENV])
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": base.host,
            "port": base.port or 5432,
            "login": base.username,
            "password": base.password,
            "schema": base.database,
            "extra": extra,
        }
    )


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get(POSTGRES_URL_ENV), reason=f"{POSTGRES_URL_ENV} is not set")
def test_postgres_connection_extras_reach_the_driver(monkeypatch, postgres_schema_url):
    schema = make_url(postgres_schema_url).query["options"].removeprefix("-csearch_path=")
    monkeypatch.setenv(
        "AIRFLOW_CONN_PG_EXTRAS",
        _postgres_connection({"sslmode": "disable", "application_name": "dsr-extras-test", "search_path": schema}),
    )
    url = sqlalchemy_url("pg_extras")
    with engine_for_url(url).connect() as conn:
        assert conn.execute(text("SELECT current_setting('application_name')")).scalar_one() == "dsr-extras-test"
        assert conn.execute(text("SELECT current_schema()")).scalar_one() == schema
    # The local server offers no TLS: sslmode=require must reach the driver and refuse to connect.
    monkeypatch.setenv("AIRFLOW_CONN_PG_TLS", _postgres_connection({"sslmode": "require"}))
    with pytest.raises(OperationalError, match="SSL"), engine_for_url(sqlalchemy_url("pg_tls")).connect():
        pass


def test_sqlite_connection_gives_a_file_url(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_APP_FILE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "a.db")}))
    assert sqlalchemy_url("app_file") == f"sqlite:///{tmp_path / 'a.db'}"


def test_unsupported_connection_type_is_refused_with_the_way_out(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_APP_MYSQL", json.dumps({"conn_type": "mysql", "host": "db"}))
    with pytest.raises(TerminalError, match="sqlalchemy_url"):
        sqlalchemy_url("app_mysql")


@pytest.mark.parametrize(
    ("variable", "demo", "refused"),
    [
        pytest.param(None, False, "not configured", id="nothing configured outside the demo"),
        pytest.param("demo-fingerprint-not-a-secret", False, "public demo value", id="the demo value outside the demo"),
        pytest.param(None, True, None, id="the demo's own value inside the demo"),
        pytest.param("a-real-long-random-secret", False, None, id="a real secret"),
    ],
)
def test_secrets_are_refused_unless_real_outside_the_demo(monkeypatch, variable, demo, refused):
    from include.dsr.connections import secret

    monkeypatch.delenv("AIRFLOW_VAR_DSR_FINGERPRINT_SECRET", raising=False)
    if variable:
        monkeypatch.setenv("AIRFLOW_VAR_DSR_FINGERPRINT_SECRET", variable)
    monkeypatch.setenv("DSR_DEMO", "1" if demo else "0")
    if refused:
        with pytest.raises(TerminalError, match="AIRFLOW_VAR_DSR_FINGERPRINT_SECRET") as info:
            secret("fingerprint")
        assert refused in str(info.value) or "not configured" in str(info.value)
    else:
        assert secret("fingerprint") == (variable or "demo-fingerprint-not-a-secret")


def test_a_lazy_client_is_made_on_first_use_once_for_all_threads():
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from include.dsr.connections import LazyClient

    made = []

    class Client:
        def list_buckets(self):
            return {"Buckets": []}

    def make():
        time.sleep(0.05)  # a slow build, so the threads arrive while it runs
        made.append(threading.get_ident())
        return Client()

    client = LazyClient(make)
    assert not client.made
    assert made == [], "nothing is built before the first use"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.list_buckets(), range(32)))
    assert answers == [{"Buckets": []}] * 32
    assert len(made) == 1
    assert client.made


def test_a_lazy_client_that_fails_to_build_raises_at_use_and_tries_again():
    from include.dsr.connections import LazyClient

    attempts = []

    def make():
        attempts.append(1)
        if len(attempts) == 1:
            raise TerminalError("connection fabconnect_s3 is not defined")
        return json  # any object with attributes

    client = LazyClient(make)
    with pytest.raises(TerminalError, match="fabconnect_s3"):
        client.dumps({})
    assert client.dumps({"a": 1}) == '{"a": 1}'
    assert len(attempts) == 2


def test_the_task_runtime_builds_no_s3_client_until_the_store_is_used(monkeypatch, tmp_path):
    """Most of a request's tasks never touch the store; each task process builds its runtime afresh."""
    from include.dsr import connections
    from include.dsr.rights import runtime

    built = []
    monkeypatch.setattr(connections, "s3_client", lambda conn_id: built.append(conn_id) or object())
    monkeypatch.setenv("AIRFLOW_CONN_DSR_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "l.db")}))
    monkeypatch.setenv(
        "AIRFLOW_CONN_FABCONNECT_APP", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "a.db")})
    )
    runtime._airflow_runtime.cache_clear()
    try:
        rt = runtime.Runtime.from_airflow()
        assert built == []
        assert isinstance(rt.s3, connections.LazyClient)  # the proxy's own attributes build nothing
        assert not rt.s3.made
        assert built == []
        with pytest.raises(AttributeError):
            rt.s3.put_object(Bucket="b", Key="k", Body=b"")  # forwarded: the client is built first
        assert built == ["fabconnect_s3"]
    finally:
        runtime._airflow_runtime.cache_clear()


def _aws_connection(monkeypatch, conn_id: str, extra: dict, login: str | None = "key-id", password: str | None = "sec"):  # noqa: S107
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "aws", "login": login, "password": password, "extra": extra}),
    )


def test_an_s3_client_with_static_keys_comes_from_the_shared_session_with_the_connection_s_settings(monkeypatch):
    from include.dsr.connections import default_boto3_session, s3_client

    extra = {
        "endpoint_url": "http://127.0.0.1:1",
        "region_name": "eu-central-1",
        "config_kwargs": {"response_checksum_validation": "when_required"},
    }
    _aws_connection(monkeypatch, "dsr_test_static", extra)
    first, second = s3_client("dsr_test_static"), s3_client("dsr_test_static")
    assert first.meta.endpoint_url == "http://127.0.0.1:1"
    assert first.meta.region_name == "eu-central-1"
    assert first.meta.config.response_checksum_validation == "when_required"
    credentials = first._request_signer._credentials
    assert (credentials.access_key, credentials.secret_key) == ("key-id", "sec")
    assert first._loader is second._loader is default_boto3_session()._session.get_component("data_loader")
    assert hasattr(first, "upload_file")  # boto3's S3 additions are there
    assert hasattr(first, "copy")


@pytest.mark.parametrize(
    ("extra", "login"),
    [
        pytest.param({"role_arn": "arn:aws:iam::123456789012:role/dsr"}, "key-id", id="a role to assume"),
        pytest.param({"profile_name": "ops"}, "key-id", id="a profile"),
        pytest.param({"region_name": "eu-central-1"}, None, id="no keys: the environment's credentials"),
    ],
)
def test_other_aws_connections_keep_the_provider_hook_s_client(monkeypatch, extra, login):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from include.dsr.connections import s3_client

    _aws_connection(monkeypatch, "dsr_test_hooked", extra, login=login, password="sec" if login else None)
    made = object()
    monkeypatch.setattr(S3Hook, "get_conn", lambda self: made)
    assert s3_client("dsr_test_hooked") is made
