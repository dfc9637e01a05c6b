"""No subject PII in task logs, XCom or the Airflow metadata DB after a full access run.

The one sanctioned copy is the DAG run's conf (``dag_run.conf``), which by contract carries
the identities given at intake; everything the run derives (resolved identities, rows,
partner answers) must stay in the staging area and the package.
"""

from __future__ import annotations

import sqlite3

import pytest

from include.demo.airflow_env import AIRFLOW_HOME
from tests.e2e.conftest import run_dag
from tests.e2e.helpers import HARD, conf_for

pytestmark = pytest.mark.slow

# Tables whose rows legitimately hold the run conf (the request as it was given).
CONF_TABLES = {"dag_run"}


def _needles(person_key: str) -> list[str]:
    person = HARD[person_key]
    return [
        person.email,
        person.phone,
        person.phone.lstrip("+"),
        person.full_name,
        person.last_name,
        "o%27brien",
        "o&#39;brien",
    ]


def _airflow_db_rows() -> dict[str, list[str]]:
    conn = sqlite3.connect(AIRFLOW_HOME / "airflow.db")
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {t: [repr(row) for row in conn.execute(f'SELECT * FROM "{t}"')] for t in tables if t not in CONF_TABLES}


def test_access_run_leaves_no_pii_in_logs_xcom_or_the_airflow_db(airflow_db, demo_world, capfd):
    person_key = "H08"  # o'brien+test@example.com, Seán O'Brien: also catches quoting bugs
    run = run_dag("dsr_access", conf_for(person_key, "E2E-PII-H08", with_phone=True))
    assert run.state == "success"
    out, err = capfd.readouterr()
    logs = (out + err).lower()
    assert "e2e-pii-h08" in logs  # the capture really holds the run's task logs
    for needle in _needles(person_key):
        assert needle.lower() not in logs, f"task logs contain {needle!r}"
    rows = _airflow_db_rows()
    assert any("E2E-PII-H08" in row for row in rows.get("xcom", [])), "XCom of the run not found"
    for table, table_rows in rows.items():
        blob = "\n".join(table_rows).lower()
        for needle in _needles(person_key):
            assert needle.lower() not in blob, f"Airflow DB table {table} contains {needle!r}"
