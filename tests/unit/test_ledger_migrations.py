"""Ledger migrations: an existing ledger (created by ``create_all``, before migrations) is
upgraded to head with its data and a chain that still verifies; a new one is created at
head; the migrations and the table definitions agree; concurrent starts migrate once.

The legacy ledger is written with frozen DDL and plain INSERTs (the chain hashed with
:func:`include.dsr.ledger.chain.event_hash`, whose algorithm is a contract), never with
today's API, so the test keeps meaning what it says as the schema moves on.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.util import CommandError

from include.dsr.ledger import migrate
from include.dsr.ledger.api import Ledger
from include.dsr.ledger.chain import canonical_json, event_hash
from include.dsr.ledger.schema import GENESIS_HASH, metadata

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
FINGERPRINT = "ab" * 32

# The ledger's tables as the releases before migrations created them (frozen on purpose).
LEGACY_DDL = [
    """CREATE TABLE dsr_requests (
        request_id VARCHAR(128) NOT NULL PRIMARY KEY, "right" VARCHAR(32) NOT NULL,
        jurisdiction VARCHAR(16) NOT NULL, subject_fingerprint VARCHAR(64) NOT NULL,
        status VARCHAR(32) NOT NULL, received_at TIMESTAMP WITH TIME ZONE NOT NULL,
        due_at TIMESTAMP WITH TIME ZONE NOT NULL, extended_due_at TIMESTAMP WITH TIME ZONE,
        extension_reason TEXT, closed_at TIMESTAMP WITH TIME ZONE, dag_run_id VARCHAR(250),
        package_uri VARCHAR(1024), package_url_expires_at TIMESTAMP WITH TIME ZONE, outcome_summary TEXT,
        created_at TIMESTAMP WITH TIME ZONE NOT NULL, updated_at TIMESTAMP WITH TIME ZONE NOT NULL)""",
    "CREATE INDEX ix_dsr_requests_status ON dsr_requests (status)",
    "CREATE INDEX ix_dsr_requests_subject_fingerprint ON dsr_requests (subject_fingerprint)",
    """CREATE TABLE dsr_request_systems (
        request_id VARCHAR(128) NOT NULL REFERENCES dsr_requests (request_id), system VARCHAR(128) NOT NULL,
        action VARCHAR(32) NOT NULL, status VARCHAR(32) NOT NULL, record_count INTEGER, outcome TEXT,
        evidence TEXT NOT NULL, attempts INTEGER NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (request_id, system, action))""",
    """CREATE TABLE dsr_events (
        seq INTEGER NOT NULL PRIMARY KEY, request_id VARCHAR(128), event_type VARCHAR(64) NOT NULL,
        payload TEXT NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL, prev_hash VARCHAR(64) NOT NULL,
        hash VARCHAR(64) NOT NULL, dedupe_key VARCHAR(255) UNIQUE)""",
    "CREATE INDEX ix_dsr_events_request_id ON dsr_events (request_id)",
]


def _stored(moment: datetime, dialect: str) -> datetime:
    """A timestamp as the old code bound it (SQLite: naive UTC wall time)."""
    return moment.replace(tzinfo=None) if dialect == "sqlite" else moment


def build_legacy_ledger(url: str) -> int:
    """A pre-migration ledger with two requests, system rows and a chain of events; returns the event count."""
    engine = sa.create_engine(url)
    dialect = engine.dialect.name
    events = [
        ("REQ-OLD-1", "request.received", {"right": "access"}),
        ("REQ-OLD-1", "system.completed", {"system": "fabconnect_app.account", "record_count": 4}),
        ("REQ-OLD-2", "request.received", {"right": "portability"}),
        ("REQ-OLD-1", "request.closed", {"status": "completed"}),
        (None, "ledger.note", {"text": "global event"}),
    ]
    with engine.begin() as conn:
        for statement in LEGACY_DDL:
            conn.exec_driver_sql(statement)
        for i, (request_id, right) in enumerate((("REQ-OLD-1", "access"), ("REQ-OLD-2", "portability"))):
            received = _stored(T0 + timedelta(hours=i), dialect)
            conn.execute(
                sa.text(
                    'INSERT INTO dsr_requests (request_id, "right", jurisdiction, subject_fingerprint, status, '
                    "received_at, due_at, created_at, updated_at) VALUES (:id, :right, 'GDPR', :fp, 'received', "
                    ":t, :due, :t, :t)"
                ),
                {"id": request_id, "right": right, "fp": FINGERPRINT, "t": received, "due": received},
            )
        conn.execute(
            sa.text(
                "INSERT INTO dsr_request_systems VALUES ('REQ-OLD-1', 'fabconnect_app.account', 'export', "
                "'completed', 4, NULL, '{}', 1, :t, :t)"
            ),
            {"t": _stored(T0, dialect)},
        )
        prev = GENESIS_HASH
        for seq, (request_id, event_type, payload) in enumerate(events, start=1):
            created = T0 + timedelta(minutes=seq)
            payload_json = canonical_json(payload)
            digest = event_hash(prev, seq, request_id, event_type, payload_json, created)
            conn.execute(
                sa.text(
                    "INSERT INTO dsr_events (seq, request_id, event_type, payload, created_at, prev_hash, hash) "
                    "VALUES (:seq, :rid, :type, :payload, :t, :prev, :hash)"
                ),
                {
                    "seq": seq,
                    "rid": request_id,
                    "type": event_type,
                    "payload": payload_json,
                    "t": _stored(created, dialect),
                    "prev": prev,
                    "hash": digest,
                },
            )
            prev = digest
    engine.dispose()
    return len(events)


def test_a_ledger_created_before_migrations_is_upgraded_with_its_data_and_chain(db_url):
    events = build_legacy_ledger(db_url)
    with Ledger(db_url) as ledger:
        assert ledger.verify_chain().ok  # the legacy chain verifies before ...
        ledger.create_schema()
        with ledger.engine.connect() as conn:
            assert migrate.current(conn) == migrate.head()
        report = ledger.verify_chain()
        assert report.ok, report.reason  # ... and after the upgrade
        assert report.checked == events
        assert [r.request_id for r in ledger.list_requests()] == ["REQ-OLD-1", "REQ-OLD-2"]
        assert [s.record_count for s in ledger.system_results("REQ-OLD-1")] == [4]
        # the upgraded ledger takes new writes, chained onto the old head
        ledger.record_request("REQ-NEW-1", "erasure", "GDPR", FINGERPRINT, T0, T0 + timedelta(days=30))
        ledger.append_event("REQ-NEW-1", "checks.passed", {"units_checked": 3})
        after = ledger.verify_chain()
        assert after.ok
        assert after.checked == events + 2


def test_an_empty_database_is_created_at_head_and_matches_the_table_definitions(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with Ledger(db_url) as ledger:
        ledger.create_schema()
        ledger.create_schema()  # idempotent
        with ledger.engine.connect() as conn:
            assert migrate.current(conn) == migrate.head()
            context = MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE})
            diff = compare_metadata(context, metadata)
    # Everything the code defines exists as defined; a difference means a migration is missing.
    assert diff == []


def test_tasks_starting_together_migrate_once(db_url):
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with Ledger(db_url) as ledger:
                ledger.create_schema()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        versions = conn.execute(sa.text(f"SELECT version_num FROM {migrate.VERSION_TABLE}")).scalars().all()
    engine.dispose()
    assert versions == [migrate.head()]


def test_an_unknown_revision_in_the_database_is_reported(db_url):
    with Ledger(db_url) as ledger:
        ledger.create_schema()
        with ledger.engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = 'from_the_future'"))
        with pytest.raises(CommandError, match="from_the_future"):
            ledger.create_schema()


def test_the_head_constant_is_the_newest_migration():
    """A new migration must move ``migrate.HEAD`` too, or tasks would take the ledger as outdated."""
    assert migrate.head() == migrate.HEAD


def test_a_ledger_at_head_is_recognised_without_alembic(db_url):
    with Ledger(db_url) as ledger:
        assert not migrate.at_head(ledger.engine)  # no version table yet
        ledger.create_schema()
        assert migrate.at_head(ledger.engine)
        with ledger.engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0003_registries'"))
        assert not migrate.at_head(ledger.engine)  # behind: the slow path upgrades it
