"""The data map loads, rejects bad files with a message naming the key, and covers every column."""

from __future__ import annotations

import copy
import sqlite3

import pytest
import yaml
from sqlalchemy import create_engine, inspect

from include import settings
from include.demo.generator import PARTNERS
from include.demo.world import WorldPaths, build_world
from include.dsr.core.data_map import load_data_map, parse_data_map
from include.dsr.core.errors import DataMapError


@pytest.fixture(scope="module")
def raw_map() -> dict:
    return yaml.safe_load(settings.DATA_MAP_PATH.read_text())


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> WorldPaths:
    paths = WorldPaths(tmp_path_factory.mktemp("world"))
    build_world(paths, subjects=60, seed=7)
    return paths


def _collection(raw: dict, system: str, name: str) -> dict:
    sys_ = next(s for s in raw["systems"] if s["key"] == system)
    return next(c for c in sys_["collections"] if c["name"] == name)


def test_the_shipped_data_map_loads():
    data_map = load_data_map()
    assert data_map.system("fabconnect_app").family == "internal"
    assert {p.key for p in data_map.partners()} == {p.slug for p in PARTNERS}
    assert {p.key for p in data_map.partners("manufacturing_partner")} == {
        p.slug for p in PARTNERS if p.role == "manufacturing"
    }
    groups = data_map.internal_groups("fabconnect_app")
    assert set(groups) == {"account", "commerce", "communications", "activity"}


def test_partner_channels_match_the_demo_partners():
    data_map = load_data_map()
    assert {p.key: p.channel for p in data_map.partners()} == {p.slug: p.channel for p in PARTNERS}


def test_every_platform_column_is_mapped_or_declared_not_personal(small_world):
    data_map = load_data_map()
    app = data_map.system("fabconnect_app")
    inspector = inspect(create_engine(small_world.app_url))
    tables = set(inspector.get_table_names())
    assert tables == {c.name for c in app.collections}, "a table is missing from the data map (or vice versa)"
    for table in tables:
        columns = {c["name"] for c in inspector.get_columns(table)}
        mapped = set(app.collection(table).field_names)
        assert columns == mapped, f"{table}: unmapped {columns - mapped}, stale {mapped - columns}"


def test_every_partner_copy_column_is_mapped(small_world):
    data_map = load_data_map()
    for partner in PARTNERS:
        conn = sqlite3.connect(small_world.partner_db(partner.slug))
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        system = data_map.system(partner.slug)
        for table in tables:
            columns = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
            assert columns == set(system.collection(table).field_names), f"{partner.slug}.{table}"


SAMPLE = {"email": "zoë.ågren@example.com", "phone": "+4915123456789", "account_id": 7, "email_hash": "ab" * 32}


def _plan(conn: sqlite3.Connection, statement) -> str:
    from sqlalchemy.dialects import sqlite

    sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    return " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))


def test_every_lookup_the_engine_issues_uses_an_index(small_world):
    """For each link column of each collection, the query the connectors run searches an index
    (the expression index of the key they compare), never scans the table."""
    from sqlalchemy import column, select, table

    from include.dsr.identity.matching import link_columns, where_any

    data_map = load_data_map()
    conn = sqlite3.connect(small_world.app_url.removeprefix("sqlite:///"))
    checked = 0
    for coll in data_map.system("fabconnect_app").collections:
        for link in link_columns(coll):
            t = table(coll.name, *(column(f) for f in coll.field_names))
            plan = _plan(conn, select(t).where(where_any(t, [link], {link.identity: {SAMPLE[link.identity]}})))
            assert "USING" in plan, f"{coll.name}.{link.name}: {plan}"
            assert f"SCAN {coll.name}" not in plan, f"{coll.name}.{link.name} scans: {plan}"
            checked += 1
    assert checked >= 20


def _mutate(raw: dict, change) -> dict:
    bad = copy.deepcopy(raw)
    change(bad)
    return bad


BAD_MAPS = [
    pytest.param(
        lambda m: _collection(m, "fabconnect_app", "accounts").update(purposes=["world_domination"]),
        "unknown purpose 'world_domination'",
        id="unknown purpose",
    ),
    pytest.param(
        lambda m: _collection(m, "fabconnect_app", "accounts")["fields"][3].update(data_categories=["user.shoe_size"]),
        "unknown category 'user.shoe_size'",
        id="unknown data category",
    ),
    pytest.param(
        lambda m: _collection(m, "fabconnect_app", "orders")["fields"][1].update(
            references=[{"collection": "acounts", "field": "id"}]
        ),
        "acounts.id does not exist",
        id="dangling reference",
    ),
    pytest.param(
        lambda m: _collection(m, "fabconnect_app", "quotes").update(erasure="keep"),
        "'keep' needs retention.legal_hold",
        id="keep without legal hold",
    ),
    pytest.param(
        lambda m: _collection(m, "fabconnect_app", "quotes")["retention"].update(period="3 years"),
        "not an ISO-8601 duration",
        id="bad retention period",
    ),
    pytest.param(
        lambda m: _collection(m, "fabconnect_app", "quotes").update(retension={}), "retension", id="typo in a key"
    ),
    pytest.param(
        lambda m: _collection(m, "fabconnect_app", "sms_messages")["fields"][1].update(identity="ssn"),
        "identity",
        id="unknown identity type",
    ),
    pytest.param(
        lambda m: next(s for s in m["systems"] if s["key"] == "payflow").pop("recipient"),
        "add a 'recipient' block",
        id="partner without named recipient",
    ),
    pytest.param(
        lambda m: _collection(m, "fabconnect_s3", "specs").update(object_key_field="quotes.spec_key"),
        "quotes.spec_key",
        id="object key field does not exist",
    ),
    pytest.param(
        lambda m: _collection(m, "fabconnect_app", "web_logs").pop("retention"),
        "needs a 'retention' block",
        id="personal collection without retention",
    ),
]


@pytest.mark.parametrize(("change", "message"), BAD_MAPS)
def test_bad_data_maps_are_refused_with_a_message_naming_the_key(raw_map, change, message):
    with pytest.raises(DataMapError) as exc_info:
        parse_data_map(_mutate(raw_map, change), "bad.yaml")
    assert message in str(exc_info.value)
    assert "bad.yaml" in str(exc_info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("systems: [unclosed", "not valid YAML", id="broken yaml"),
        pytest.param("- a list\n- not a map\n", "must be a mapping", id="not a mapping"),
    ],
)
def test_unreadable_files_are_refused(tmp_path, content, message):
    path = tmp_path / "map.yaml"
    path.write_text(content)
    with pytest.raises(DataMapError, match=message):
        load_data_map(path)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(DataMapError, match="DSR_DATA_MAP"):
        load_data_map(tmp_path / "nope.yaml")


def test_retention_days_and_portability_scope():
    data_map = load_data_map()
    app = data_map.system("fabconnect_app")
    assert app.collection("invoices").retention.days == 8 * 365
    assert app.collection("invoices").retention.legal_hold
    assert app.collection("pricing_features").portability == "inferred"
    assert app.collection("accounts").portability == "provided"
