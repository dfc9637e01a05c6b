"""First end-to-end run: one access request for a hard identity case."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import run_dag

pytestmark = pytest.mark.slow


def test_access_request_runs_end_to_end(airflow_db, demo_world):
    run = run_dag("dsr_access", {"request_id": "E2E-SMOKE-1", "subject": {"email": " Maria.Lopez@Example.com "},
                                 "verification": {"method": "logged_in_session", "verified_at": "2026-11-20T10:00:00Z"}})
    assert run.state == "success"
