"""``retention_enforcement`` end to end with dag.test() on the demo world (at today's date).

A dry run changes no row and no object; the run removes what its dry run said and the checks
pass; a second run removes nothing; the run's record reaches the ledger (the dashboard reads it).
Row-exact cutoffs, holds and leftovers on both backends are in tests/connectors/test_retention.py.
"""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from include import constants
from include.demo import app_schema
from include.dsr.retention.run import DRY_RUN_EVENT, RUN_EVENT
from tests.e2e.conftest import rebuild_world, run_dag
from tests.e2e.helpers import ledger

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def world_restored_afterwards(demo_world):
    yield
    rebuild_world(demo_world)


def _rows(world) -> dict[str, set[str]]:
    engine = sa.create_engine(world.paths.app_url)
    with engine.connect() as conn:
        found = {
            t.name: {hashlib.sha256(repr(tuple(r)).encode()).hexdigest() for r in conn.execute(sa.select(t))}
            for t in app_schema.metadata.sorted_tables
        }
    engine.dispose()
    return found


def _objects(world) -> set[str]:
    listed = world.s3.list_object_versions(Bucket=constants.PLATFORM_BUCKET)
    return {(v["Key"], v["VersionId"]) for v in listed.get("Versions", [])}


def _last(event_type: str) -> dict:
    return [e for e in ledger().events() if e.event_type == event_type][-1].payload


def test_dry_run_then_run_then_nothing_left_to_do(airflow_db, demo_world):
    before, objects = _rows(demo_world), _objects(demo_world)
    dry = run_dag(constants.DAG_RETENTION, {"dry_run": True})
    assert dry.state == "success"
    assert _rows(demo_world) == before
    assert _objects(demo_world) == objects
    would = _last(DRY_RUN_EVENT)["would"]
    assert sum(c["deleted"] + c["anonymised"] for c in would.values()) > 0  # the demo world has expired rows

    run = run_dag(constants.DAG_RETENTION, {})
    assert run.state == "success"
    record = _last(RUN_EVENT)
    assert record["checks"]["failures"] == 0
    after = _rows(demo_world)
    for name, counts in record["collections"].items():
        assert counts["deleted"] == would[name]["deleted"], name
        # the rows an erasure kept until a date now past go first, through the registry
        assert counts["held_leftovers_deleted"] == would[name]["held_leftovers_due"], name
        gone = counts["deleted"] + counts["held_leftovers_deleted"] + counts["anonymised"]
        assert len(before[name] - after[name]) == gone, name
    assert ledger().verify_chain().ok

    again = run_dag(constants.DAG_RETENTION, {})
    assert again.state == "success"
    assert _rows(demo_world) == after
    assert all(c["deleted"] == c["anonymised"] == 0 for c in _last(RUN_EVENT)["collections"].values())
