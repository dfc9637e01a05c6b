"""End-to-end fixtures: a migrated Airflow metadata DB, the demo world and its servers.

The world lives in the test session's own demo dir and ports (see tests/conftest.py):
a real S3-compatible server over HTTP, real partner simulators over HTTP / S3, the platform
DB as SQLite. DAGs run with ``dag.test()`` against all of it.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from include import settings
from include.demo.world import WorldPaths, build_world, s3_client_for
from tests.e2e.dag_test_fix import deadline_pruning_fix

E2E_SUBJECTS = 300


@dataclass
class DemoWorld:
    paths: WorldPaths
    s3: Any
    simulators: dict[str, Any]
    endpoint: str


@pytest.fixture(scope="session")
def airflow_db() -> None:
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def demo_world() -> DemoWorld:
    from include.demo.services import (
        s3_endpoint,
        start_partner_simulators,
        start_s3_server,
    )
    from include.demo.smtp_sink import SmtpSink

    s3_server = start_s3_server()
    endpoint = s3_endpoint()
    paths = WorldPaths(settings.DEMO_DIR)
    s3 = s3_client_for(endpoint)
    build_world(paths, subjects=E2E_SUBJECTS, seed=settings.DEMO_SEED, s3_client=s3)
    simulators = {sim.slug: sim for sim in start_partner_simulators(paths, endpoint)}
    mail = SmtpSink().start()
    yield DemoWorld(paths, s3, simulators, endpoint)
    mail.stop()
    for sim in simulators.values():
        sim.stop()
    s3_server.stop()


@pytest.fixture
def healthy_partners(demo_world):
    """Every simulator answers normally again after the test."""
    from include.demo.partners.faults import Faults

    yield demo_world.simulators
    for sim in demo_world.simulators.values():
        sim.faults = Faults()


def load_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(settings.PROJECT_ROOT / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


def run_dag(dag_id: str, conf: dict, approve: str = "confirm_identity|confirm_manual_partner"):
    """Run a DAG to the end in-process; HITL tasks matching ``approve`` are marked successful."""
    with deadline_pruning_fix():  # apache/airflow#73428, see tests/e2e/dag_test_fix.py
        return load_dag(dag_id).test(run_conf=conf, mark_success_pattern=approve)


def rebuild_world(world: DemoWorld, app_url: str = "") -> None:
    """Build the session's demo world again (same seed) and restart its partner simulators, for
    modules that change data (erasure): the modules after them see the world as it was.

    :param app_url: the platform DB to build it in (a PostgreSQL schema); default the session's SQLite
    """
    from include.demo.services import start_partner_simulators

    for sim in world.simulators.values():
        sim.stop()
    paths = WorldPaths(world.paths.root, app_url=app_url) if app_url else world.paths
    build_world(paths, subjects=E2E_SUBJECTS, seed=settings.DEMO_SEED, s3_client=world.s3)
    world.simulators.clear()
    world.simulators.update({sim.slug: sim for sim in start_partner_simulators(world.paths, world.endpoint)})
