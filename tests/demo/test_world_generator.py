"""The demo world is deterministic, scales with its size knob and holds every hard identity case."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest
from sqlalchemy import create_engine, text

from include.demo import app_schema
from include.demo.people import hard_case_people
from include.demo.world import WorldPaths, build_world


def _digest(paths: WorldPaths) -> str:
    """Hash of every platform row, every partner row and the ground truth."""
    h = hashlib.sha256()
    engine = create_engine(paths.app_url)
    with engine.connect() as conn:
        for table in app_schema.metadata.sorted_tables:
            for row in conn.execute(table.select().order_by(table.c.id)):
                h.update(repr(tuple(row)).encode())
    engine.dispose()
    for db in sorted(paths.partners_dir.glob("*.sqlite")) + [paths.ground_truth]:
        conn = sqlite3.connect(db)
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
            for row in conn.execute(f'SELECT * FROM "{name}" ORDER BY 1, 2, 3'):
                h.update(repr(row).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> WorldPaths:
    paths = WorldPaths(tmp_path_factory.mktemp("world"))
    build_world(paths, subjects=300, seed=11)
    return paths


def _truth(paths: WorldPaths, sql: str, *args):
    return sqlite3.connect(paths.ground_truth).execute(sql, args).fetchall()


def _app(paths: WorldPaths, sql: str, **params):
    engine = create_engine(paths.app_url)
    with engine.connect() as conn:
        rows = conn.execute(text(sql), params).fetchall()
    engine.dispose()
    return rows


def test_same_seed_same_world_other_seed_other_world(tmp_path):
    first, second, other = (WorldPaths(tmp_path / name) for name in ("a", "b", "c"))
    build_world(first, subjects=80, seed=3)
    build_world(second, subjects=80, seed=3)
    build_world(other, subjects=80, seed=4)
    assert _digest(first) == _digest(second)
    assert _digest(first) != _digest(other)


def test_size_is_configurable(tmp_path):
    small = build_world(WorldPaths(tmp_path / "s"), subjects=50, seed=1)
    large = build_world(WorldPaths(tmp_path / "l"), subjects=500, seed=1)
    assert large["people"] == 510
    assert small["people"] == 60
    assert large["counts"]["fabconnect_app.accounts"] > 5 * small["counts"]["fabconnect_app.accounts"]


def test_every_hard_case_is_in_the_world(world):
    cases = {row[0] for row in _truth(world, "SELECT DISTINCT hard_case FROM people WHERE hard_case IS NOT NULL")}
    assert cases == {
        "case_email",
        "near_email",
        "same_name_company",
        "shared_phone",
        "unicode_name",
        "sql_meta_email",
        "chat_sms_only",
    }


def test_case_variant_email_is_written_with_other_case_and_spaces(world):
    written = {r[0] for r in _app(world, "SELECT contact_email FROM support_tickets")}
    assert "  Maria.Lopez@Example.COM " in written
    assert ("maria.lopes@example.com",) in _app(world, "SELECT email FROM accounts")


def test_same_name_same_company_are_two_accounts(world):
    rows = _app(
        world, "SELECT email FROM accounts WHERE first_name='John' AND last_name='Smith' AND company='Acme Tooling Ltd'"
    )
    assert len(rows) == 2


def test_shared_company_phone_rows_are_not_linkable(world):
    (phone,) = {p.phone for p in hard_case_people() if p.hard_case == "shared_phone"}
    assert len(_app(world, "SELECT id FROM accounts WHERE phone = :p", p=phone)) == 2
    sms = _truth(
        world, "SELECT linkable FROM owned_rows WHERE collection='sms_messages' AND person_key IN ('H05','H06')"
    )
    assert sms
    assert all(linkable == 0 for (linkable,) in sms)


def test_unicode_and_metacharacter_identities_round_trip(world):
    assert _app(world, "SELECT last_name FROM accounts WHERE email = :e", e="zoe.agren@example.com") == [
        ("Ågren-Łukasiewicz",)
    ]
    assert _app(world, "SELECT company FROM accounts WHERE email = :e", e="o'brien+test@example.com") == [
        ('O\'Brien "Sensors"; Ltd',)
    ]


def test_visitor_exists_only_in_chatbot_sms_and_feedback(world):
    assert not _app(world, "SELECT id FROM accounts WHERE email = 'visitor.only@example.com'")
    collections = {r[0] for r in _truth(world, "SELECT DISTINCT collection FROM owned_rows WHERE person_key='H09'")}
    assert (
        {"chatbot_transcripts", "sms_messages"}
        <= collections
        <= {"chatbot_transcripts", "sms_messages", "feedback_emails"}
    )


def test_partners_hold_only_the_subjects_whose_orders_they_got(world):
    """A manufacturing partner's copy has exactly one package per order routed to it."""
    orders = dict(
        _app(
            world,
            "SELECT p.slug, count(*) FROM orders o JOIN manufacturing_partners p "
            "ON p.id = o.partner_id GROUP BY p.slug",
        )
    )
    for slug, count in orders.items():
        held = sqlite3.connect(world.partner_db(slug)).execute("SELECT count(*) FROM order_packages").fetchone()[0]
        assert held == count, slug


def test_ground_truth_covers_every_owned_platform_row(world):
    """Every row of a personal table is owned by someone, except anonymous web traffic."""
    owned = dict(
        _truth(world, "SELECT collection, count(*) FROM owned_rows WHERE system='fabconnect_app' GROUP BY collection")
    )
    for table in ("accounts", "orders", "invoices", "support_tickets", "sms_messages"):
        assert owned[table] == _app(world, f"SELECT count(*) FROM {table}")[0][0]
    anonymous = _app(world, "SELECT count(*) FROM web_logs WHERE account_id IS NULL")[0][0]
    assert owned["web_logs"] == _app(world, "SELECT count(*) FROM web_logs")[0][0] - anonymous > 0


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("DSR_TEST_POSTGRES_URL"), reason="DSR_TEST_POSTGRES_URL is not set")
def test_the_same_world_builds_on_postgres(tmp_path, postgres_schema_url):
    db_url = postgres_schema_url
    manifest = build_world(WorldPaths(tmp_path, app_url=db_url), subjects=100, seed=5)
    sqlite_manifest = build_world(WorldPaths(tmp_path / "sqlite"), subjects=100, seed=5)
    assert manifest["counts"] == sqlite_manifest["counts"]
    paths = WorldPaths(tmp_path, app_url=db_url)
    assert _app(paths, "SELECT count(*) FROM accounts WHERE lower(trim(email)) = 'maria.lopez@example.com'") == [(1,)]
