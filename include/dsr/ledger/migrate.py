"""Bring a ledger database to the newest schema with Alembic (``migrations/versions``).

:func:`upgrade` runs at startup (:meth:`include.dsr.ledger.api.Ledger.create_schema`): on an
empty database it creates everything; on a ledger created before migrations existed (the
tables, but no version table) it stamps the baseline first, then applies what came after.
It holds the ledger's write lock (:func:`include.dsr.ledger.store.write_transaction`), so
tasks starting together migrate once and nobody writes into a half-migrated ledger; the
version check before the lock keeps the common case (already at head) to one read, without
loading Alembic (:func:`at_head`).

The version lives in ``dsr_ledger_version``, not Alembic's default ``alembic_version``, so the
ledger may share a database with Airflow's metadata DB or the platform DB.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from include.dsr.ledger import store

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection, Engine

log = logging.getLogger(__name__)

VERSION_TABLE = "dsr_ledger_version"
#: The schema of the releases that created the ledger with ``metadata.create_all``.
BASELINE = "0001_baseline"
#: The newest migration, so that a task finds the ledger up to date with one read and without
#: loading Alembic (0.08 s per task process); a unit test holds it equal to :func:`head`.
HEAD = "0004_legal_holds"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _config(conn: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    return config


@lru_cache(maxsize=1)
def head() -> str:
    """The newest revision in ``migrations/versions``."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(_config()).get_current_head()
    if revision is None:
        raise RuntimeError(f"no ledger migrations found in {MIGRATIONS_DIR}")
    return revision


def current(conn: Connection) -> str | None:
    """The revision the database is at; None for an empty or pre-migration ledger."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def at_head(engine: Engine) -> bool:
    """Whether the ledger is at :data:`HEAD`: one read of the version table, no Alembic."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as probe:
            versions = probe.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    except DBAPIError:  # no version table yet: an empty or pre-migration ledger
        return False
    return versions == [HEAD]


def upgrade(engine: Engine) -> str:
    """Create or upgrade the ledger to :func:`head`; returns the revision it is at now."""
    if at_head(engine):
        return HEAD
    from alembic import command
    from sqlalchemy import inspect

    with engine.connect() as probe:
        if current(probe) == head():
            return head()
    with store.write_transaction(engine) as conn:
        before = current(conn)
        config = _config(conn)
        if before is None and inspect(conn).has_table("dsr_requests"):
            command.stamp(config, BASELINE)
            log.info("ledger created before migrations: stamped at %s", BASELINE)
        command.upgrade(config, "head")
        after = current(conn)
    log.info("ledger schema on %s: %s -> %s", engine.dialect.name, before or "empty", after)
    return after or head()
