"""Identity resolution + the database connector return exactly each subject's rows.

Compared against the generator's ground truth for every hard identity case, on SQLite
and (when DSR_TEST_POSTGRES_URL is set) on PostgreSQL.
"""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import create_engine

from include import settings
from include.demo.people import hard_case_people
from include.demo.world import WorldPaths, build_world
from include.dsr.connectors.base import REQUEST_ID_COLUMN
from include.dsr.connectors.sql_database import SqlDatabaseConnector
from include.dsr.core.data_map import load_data_map
from include.dsr.core.identities import normalize_email, normalize_phone
from include.dsr.identity.resolver import IdentityResolver, SubjectQuery

HARD = {p.key: p for p in hard_case_people()}


@pytest.fixture(scope="module")
def data_map():
    return load_data_map()


@pytest.fixture
def world(db_url, tmp_path) -> WorldPaths:
    paths = WorldPaths(tmp_path / "world", app_url=db_url)
    build_world(paths, subjects=200, seed=21)
    return paths


def _expected(paths: WorldPaths, person_key: str) -> set[tuple[str, str]]:
    rows = sqlite3.connect(paths.ground_truth).execute(
        "SELECT collection, row_id FROM owned_rows WHERE person_key=? AND system='fabconnect_app' AND linkable=1",
        (person_key,),
    )
    return set(rows)


def _query(person_key: str, with_phone: bool) -> SubjectQuery:
    p = HARD[person_key]
    return SubjectQuery(
        request_id=f"req-{person_key}",
        email=normalize_email(p.email),
        phone=normalize_phone(p.phone) if with_phone else None,
    )


@pytest.mark.parametrize(
    ("person_key", "with_phone"),
    [
        pytest.param("H01", False, id="email written with other case and spaces elsewhere"),
        pytest.param("H02", False, id="near-duplicate email"),
        pytest.param("H03", False, id="same name same company (first)"),
        pytest.param("H04", False, id="same name same company (second)"),
        pytest.param("H05", True, id="shared company phone given in the request"),
        pytest.param("H06", False, id="shared company phone via account"),
        pytest.param("H07", False, id="unicode name"),
        pytest.param("H08", False, id="sql metacharacters in email"),
        pytest.param("H09", True, id="visitor known only from chatbot and sms"),
        pytest.param("H10", False, id="manufacturing partner user"),
    ],
)
def test_export_returns_exactly_the_subjects_rows(world, data_map, person_key, with_phone):
    engine = create_engine(world.app_url)
    (subject,) = IdentityResolver(engine, data_map, settings.DEMO_ERASURE_HASH_SECRET).resolve(
        [_query(person_key, with_phone)]
    )
    result = SqlDatabaseConnector(data_map.system("fabconnect_app"), engine=engine).export([subject])
    got = {(name, str(row_id)) for name, frame in result.frames.items() for row_id in frame["id"]}
    assert got == _expected(world, person_key)
    assert all((frame[REQUEST_ID_COLUMN] == subject.request_id).all() for frame in result.frames.values())


def test_a_batch_splits_rows_back_per_subject(world, data_map):
    engine = create_engine(world.app_url)
    batch = [_query(key, False) for key in ("H01", "H03", "H04", "H07")]
    subjects = IdentityResolver(engine, data_map, settings.DEMO_ERASURE_HASH_SECRET).resolve(batch)
    result = SqlDatabaseConnector(data_map.system("fabconnect_app"), engine=engine).export(subjects)
    for query in batch:
        got = {
            (name, str(r))
            for name, frame in result.frames.items()
            for r in frame.loc[frame[REQUEST_ID_COLUMN] == query.request_id, "id"]
        }
        assert got == _expected(world, query.request_id.removeprefix("req-"))


def test_shared_phone_is_ambiguous_and_links_nobody(world, data_map):
    engine = create_engine(world.app_url)
    shared = normalize_phone(HARD["H05"].phone)
    (by_phone_only,) = IdentityResolver(engine, data_map, settings.DEMO_ERASURE_HASH_SECRET).resolve(
        [SubjectQuery("req-phone", phone=shared)]
    )
    assert not by_phone_only.account_ids
    assert shared in by_phone_only.ambiguous_phones
    assert not by_phone_only.phones


def test_recipients_are_the_partners_that_received_the_subjects_data(world, data_map):
    engine = create_engine(world.app_url)
    (subject,) = IdentityResolver(engine, data_map, settings.DEMO_ERASURE_HASH_SECRET).resolve([_query("H01", False)])
    truth = sqlite3.connect(world.ground_truth)
    holders = {
        r[0]
        for r in truth.execute(
            "SELECT DISTINCT system FROM owned_rows WHERE person_key='H01' AND system NOT LIKE 'fabconnect_%'"
        )
    }
    assert subject.recipients == holders
    assert "payflow" in holders
    assert len(holders) >= 2


def test_locate_counts_match_export(world, data_map):
    engine = create_engine(world.app_url)
    (subject,) = IdentityResolver(engine, data_map, settings.DEMO_ERASURE_HASH_SECRET).resolve([_query("H08", False)])
    connector = SqlDatabaseConnector(data_map.system("fabconnect_app"), engine=engine)
    counts = connector.locate([subject])
    exported = connector.export([subject]).counts()
    assert {k: v for k, v in counts.items() if v} == {k: v for k, v in exported.items() if v}
