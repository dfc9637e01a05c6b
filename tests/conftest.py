"""Shared fixtures.

``db_url`` (and its alias ``ledger_url``) run a test once per database backend:

* ``sqlite``: a fresh database file under the test's ``tmp_path``;
* ``postgres``: a fresh schema in the PostgreSQL named by ``DSR_TEST_POSTGRES_URL``
  (e.g. ``postgresql+psycopg2://postgres@127.0.0.1:5432/test``), selected through
  ``?options=-csearch_path=<schema>`` and dropped afterwards. Marked ``postgres`` and
  skipped when the variable is unset.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

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
