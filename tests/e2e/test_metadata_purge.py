"""The metadata purge against Airflow's own schema: every copy of a conf Airflow makes.

Rows are made by Airflow's code, not hand-written SQL: ``create_dagrun`` (the scheduler's
run creation, deadlines included), ``Deadline.handle_miss`` (what the scheduler does when a
Deadline Alert is missed: it copies the run, conf included, into ``callback.data``) and
``Log`` rows shaped as the REST API's trigger audit row. The purge then runs as the product
runs it, through its own engine on the metadata DB.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from include import constants
from include.dsr.core.fingerprint import subject_fingerprint
from include.dsr.ledger.api import Ledger
from include.dsr.orchestration import metadata_purge

EMAIL = "purge.probe+ünï@example.com"


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.create_schema()
    yield ledger
    ledger.close()


@pytest.fixture
def metadata_engine(airflow_db):
    from airflow import settings as airflow_settings

    return airflow_settings.engine


def _trigger_audit_row(session, dag_id: str, conf: dict, when: datetime):
    from airflow.models.log import Log

    row = Log(event="trigger_dag_run", dag_id=dag_id, extra=json.dumps({"conf": conf, "dag_run_id": None}))
    row.dttm = when
    session.add(row)
    session.flush()
    return row.id


def _sync_dag_folder() -> None:
    """Write the project's DAGs to the metadata DB, as ``dag.test()`` and the dag-processor do."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        sync_bag_to_db(bag, bundle.name, bundle.version)


def _missed_run(session, request_id: str):
    """A run of the access DAG whose Deadline Alert the scheduler has handled as missed."""
    from airflow.models.dag_version import DagVersion
    from airflow.models.deadline import Deadline
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    if not DagVersion.get_version(constants.DAG_ACCESS):
        _sync_dag_folder()
    dag = SerializedDagModel.get_dag(constants.DAG_ACCESS, session=session)
    conf = {"request_id": request_id, "subject": {"email": EMAIL}, "received_at": "2026-01-05T09:00:00Z"}
    run = dag.create_dagrun(
        run_id=f"purge_probe__{uuid.uuid4().hex[:8]}",
        logical_date=None,
        data_interval=None,
        run_after=datetime.now(UTC),
        conf=conf,
        run_type=DagRunType.MANUAL,
        triggered_by=DagRunTriggeredByType.TEST,
        state=DagRunState.SUCCESS,
        session=session,
    )
    session.flush()
    for deadline in session.scalars(select(Deadline).where(Deadline.dagrun_id == run.id)):
        deadline.handle_miss(session)
    session.flush()
    return run, conf


def _decoded(value) -> str:
    """A JSON value as text with its non-ASCII characters unescaped (SQLite stores ``\\u00fc``)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, ensure_ascii=False)


def _rows_with(engine, needle: str) -> dict[str, int]:
    from sqlalchemy import text

    found = {}
    with engine.connect() as conn:
        for table, column in (("dag_run", "conf"), ("log", "extra"), ("callback", "data")):
            values = conn.execute(text(f"SELECT {column} FROM {table}")).scalars()
            hits = sum(1 for v in values if v is not None and needle in _decoded(v))
            if hits:
                found[table] = hits
    return found


def test_purge_removes_the_conf_from_run_audit_row_and_missed_deadline_callback(metadata_engine, ledger):
    from airflow.utils.session import create_session

    request_id = f"DSR-PURGE-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    with create_session() as session:
        run, conf = _missed_run(session, request_id)
        _trigger_audit_row(session, constants.DAG_ACCESS, conf, now)
    assert _rows_with(metadata_engine, EMAIL) == {"dag_run": 1, "log": 1, "callback": 1}

    ledger.record_request(
        request_id,
        "access",
        "GDPR",
        subject_fingerprint({"email": EMAIL}, "test-secret"),
        now,
        now + timedelta(days=30),
    )
    ledger.close_request(request_id, "completed", now, "answered")
    changed = metadata_purge.purge_request(metadata_engine, ledger, request_id, [constants.DAG_ACCESS])

    assert changed == {"dag_run": 1, "log": 1, "callback": 1}
    assert _rows_with(metadata_engine, EMAIL) == {}
    assert _rows_with(metadata_engine, request_id)["dag_run"] == 1  # the run stays traceable to its request
    assert metadata_purge.purge_request(metadata_engine, ledger, request_id, [constants.DAG_ACCESS]) == {
        "dag_run": 0,
        "log": 0,
        "callback": 0,
    }


def test_sweep_takes_audit_rows_of_refused_triggers_once_old_and_leaves_open_requests(metadata_engine, ledger):
    """A trigger the API refused (bad conf) leaves an audit row and no run; the sweep takes it."""
    from airflow.utils.session import create_session

    now = datetime.now(UTC)
    open_id = f"DSR-OPEN-{uuid.uuid4().hex[:6]}"
    ledger.record_request(
        open_id, "access", "GDPR", subject_fingerprint({"email": EMAIL}, "test-secret"), now, now + timedelta(days=30)
    )
    with create_session() as session:
        old = now - timedelta(days=3)
        _trigger_audit_row(session, constants.DAG_ERASURE, {"subject": {"email": EMAIL}}, old)  # no request id
        _trigger_audit_row(
            session, constants.DAG_ERASURE, {"request_id": "DSR-NEVER-RAN", "subject": {"email": EMAIL}}, old
        )
        _trigger_audit_row(session, constants.DAG_ERASURE, {"request_id": open_id, "subject": {"email": EMAIL}}, old)
        _trigger_audit_row(session, constants.DAG_ERASURE, {"subject": {"email": EMAIL}}, now)  # too recent
    before = _rows_with(metadata_engine, EMAIL).get("log", 0)

    result = metadata_purge.sweep(metadata_engine, ledger, [constants.DAG_ERASURE], after_days=1, now=now)

    assert result["log"] == 2
    assert _rows_with(metadata_engine, EMAIL).get("log", 0) == before - 2
