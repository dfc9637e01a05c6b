"""Erasure of the platform DB, planned then applied, on SQLite and PostgreSQL, without Airflow.

A wave of two hard cases (a customer with orders and invoices, a manufacturing-partner user with a
payout account) is planned, applied and checked against the generator's world: what is deleted,
anonymised and held; every other person's rows byte-for-byte unchanged; a second run changes
nothing; the Great Expectations checks pass after, and fail on a world where a row was missed.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import datetime

import pytest
import sqlalchemy as sa

from include import settings
from include.demo import app_schema
from include.demo.people import hard_case_people
from include.demo.world import WorldPaths, build_world
from include.dsr.checks.erasure import ErasureChecker
from include.dsr.connectors.sql_database import SqlDatabaseConnector
from include.dsr.connectors.sql_erasure import deletion_order, is_hashed
from include.dsr.core.data_map import load_data_map
from include.dsr.core.erasure_terms import ANONYMISE, DELETE, HOLD
from include.dsr.core.identities import normalize_email
from include.dsr.core.pii import keyed_hash
from include.dsr.identity.resolver import IdentityResolver, SubjectQuery
from include.dsr.rights.erasure_plan import ErasurePlanner
from tests.conftest import POSTGRES_URL_ENV

HARD = {p.key: p for p in hard_case_people()}
SECRET = settings.DEMO_ERASURE_HASH_SECRET
WAVE = ("H01", "H10")


@pytest.fixture
def world(db_url, tmp_path):
    paths = WorldPaths(tmp_path / "world", app_url=db_url)
    build_world(paths, subjects=150, seed=33)
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


def _subjects(engine):
    data_map = load_data_map()
    queries = [SubjectQuery(f"ERASE-{k}", email=normalize_email(HARD[k].email)) for k in WAVE]
    return IdentityResolver(engine, data_map, SECRET).resolve(queries)


def _checksums(engine, exclude: dict[str, set[str]], suppressed: tuple = ()) -> dict[str, str]:
    """Per table, a digest of every row whose key is not in ``exclude[table]`` (and, on the
    suppression list, not one of the ``suppressed`` hashes the erasure adds)."""
    digests = {}
    with engine.connect() as conn:
        for t in app_schema.metadata.sorted_tables:
            rows = conn.execute(sa.select(t).order_by(*t.primary_key.columns)).all()
            kept = [
                repr(tuple(r))
                for r in rows
                if str(r[0]) not in exclude.get(t.name, set())
                and not (t.name == "suppression_list" and r._mapping["email_hash"] in suppressed)
            ]
            digests[t.name] = hashlib.sha256("\n".join(kept).encode()).hexdigest()
    return digests


def test_a_wave_is_planned_applied_and_checked_leaving_everyone_else_untouched(world):
    data_map = load_data_map()
    database = SqlDatabaseConnector(data_map.system("fabconnect_app"), engine=world)
    subjects = _subjects(world)
    assert all(s.account_ids for s in subjects)
    plan = ErasurePlanner(data_map, database, None, now=datetime(2026, 12, 1)).plan(subjects)
    touched: dict[str, set[str]] = {}
    for part in plan.requests.values():
        for name, modes in part.rows.items():
            touched.setdefault(name, set()).update(str(k) for keys in modes.values() for k in keys)
    hashes = sorted({keyed_hash(e, SECRET) for s in subjects for e in s.emails})
    before = _checksums(world, touched, hashes)

    customer = plan.requests["ERASE-H01"]
    assert customer.rows["accounts"][ANONYMISE]
    assert not customer.rows["accounts"][DELETE]
    assert customer.rows["orders"][HOLD]
    assert customer.rows["invoices"][HOLD]
    assert customer.rows["addresses"][DELETE]
    assert not customer.rows["addresses"][ANONYMISE]
    ordered_quotes = {str(k) for k in _column(world, "orders", "quote_id", customer.rows["orders"][HOLD])}
    assert {str(k) for k in customer.rows["quotes"][ANONYMISE]} == ordered_quotes  # still referenced: kept
    holds = {h["collection"] for h in customer.holds}
    assert holds == {"orders", "invoices", "suppression_list"}  # H01 unsubscribed once: that entry stays
    partner_user = plan.requests["ERASE-H10"]
    assert partner_user.rows["payout_accounts"][HOLD]
    held_fields = plan.fields["payout_accounts"][HOLD]
    assert (held_fields["iban"], held_fields["bic"]) == ("null", "null")  # stripped to what the law requires
    assert (held_fields["account_holder"], held_fields["tax_id"]) == ("keep", "keep")
    assert plan.fields["accounts"][ANONYMISE]["email"] == "hash"
    assert plan.suppression_collection == "suppression_list"
    suppression = ("suppression_list", hashes)

    first = database.apply_erasure(plan.changes(), SECRET, suppression)
    assert first["suppression_list"]["added"] == 1  # H10's address; H01's entry was there already
    assert sum(c["deleted"] for c in first.values()) == sum(
        len(m.get(DELETE, [])) for p in plan.requests.values() for m in p.rows.values()
    )
    assert _checksums(world, touched, hashes) == before  # everyone else, byte for byte
    emails = _column(world, "accounts", "email", [k for s in subjects for k in s.account_ids])
    assert emails
    assert all(is_hashed(e) for e in emails)
    ibans = _column(world, "payout_accounts", "iban", partner_user.rows["payout_accounts"][HOLD])
    assert set(ibans) == {None}

    again = database.apply_erasure(plan.changes(), SECRET, suppression)
    assert all(c["deleted"] == c["nulled"] == c["hashed"] == c.get("added", 0) == 0 for c in again.values())
    assert _column(world, "accounts", "email", [k for s in subjects for k in s.account_ids]) == emails

    checker = ErasureChecker(data_map, database, None, None, "unused", SECRET)
    for subject in subjects:
        report = checker.check(subject, plan)
        assert report.success, report.reason


def test_the_checks_fail_when_a_row_was_missed(world):
    data_map = load_data_map()
    database = SqlDatabaseConnector(data_map.system("fabconnect_app"), engine=world)
    subjects = _subjects(world)
    plan = ErasurePlanner(data_map, database, None).plan(subjects)
    changes = plan.changes()
    skipped = next(c for c in changes if c.collection == "web_logs" and c.delete)
    changes = [c for c in changes if c is not skipped]  # a bug that forgets the web logs
    database.apply_erasure(changes, SECRET)
    report = ErasureChecker(data_map, database, None, None, "unused", SECRET).check(subjects[0], plan)
    failed = {o.collection for o in report.outcomes if not o.success}
    assert {"web_logs", "web_logs (deleted)"} <= failed


def _column(engine, table: str, column: str, keys) -> list:
    t = sa.table(table, sa.column("id"), sa.column(column))
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(t.c[column]).where(t.c.id.in_(list(keys))).order_by(t.c.id))]


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get(POSTGRES_URL_ENV), reason=f"{POSTGRES_URL_ENV} is not set")
def test_a_connection_dropped_mid_erasure_leaves_the_database_unchanged_and_a_rerun_completes(
    postgres_schema_url, tmp_path
):
    """The erasure's backend is killed while its transaction holds changes (updates done, a delete
    waiting on a lock): PostgreSQL rolls all of it back, and applying the plan again completes."""
    paths = WorldPaths(tmp_path / "world", app_url=postgres_schema_url)
    build_world(paths, subjects=150, seed=33)
    engine = sa.create_engine(postgres_schema_url)
    data_map = load_data_map()
    database = SqlDatabaseConnector(data_map.system("fabconnect_app"), engine=engine)
    subjects = _subjects(engine)
    plan = ErasurePlanner(data_map, database, None).plan(subjects)
    changes = plan.changes()
    suppression = ("suppression_list", sorted({keyed_hash(e, SECRET) for s in subjects for e in s.emails}))
    deleted_first = next(
        name
        for name in deletion_order(data_map.system("fabconnect_app"))
        if any(c.collection == name and c.delete for c in changes)
    )
    untouched = _checksums(engine, {})
    locker = engine.connect()
    locker.begin()
    locker.exec_driver_sql(f'LOCK TABLE "{deleted_first}" IN ACCESS EXCLUSIVE MODE')
    failure: list[BaseException] = []

    def erase() -> None:
        try:
            database.apply_erasure(changes, SECRET, suppression)
        except BaseException as exc:  # the dropped connection, expected
            failure.append(exc)

    worker = threading.Thread(target=erase)
    worker.start()
    pid = _backend_waiting_on_a_lock(engine)
    with engine.connect() as admin:
        admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    worker.join(30)
    locker.rollback()
    locker.close()
    assert failure
    assert isinstance(failure[0], sa.exc.OperationalError | sa.exc.DBAPIError)
    assert _checksums(engine, {}) == untouched  # not one row changed

    database.apply_erasure(changes, SECRET, suppression)
    checker = ErasureChecker(data_map, database, None, None, "unused", SECRET)
    for subject in subjects:
        report = checker.check(subject, plan)
        assert report.success, report.reason
    assert _checksums(engine, {}) != untouched
    engine.dispose()


def _backend_waiting_on_a_lock(engine, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            pid = conn.execute(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
            if pid:
                return int(pid)
            time.sleep(0.05)
    raise AssertionError("the erasure never reached the locked table")
