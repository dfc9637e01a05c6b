"""Work around apache/airflow#73428 (open in 3.3.2) for ``dag.test()`` of DAGs with a Deadline Alert.

``DAG.test()`` runs the DAG run against an in-memory serialised copy of the DAG whose
``deadline`` holds the encoded alerts instead of their ``deadline_alert`` row ids. When the
run succeeds, ``DagRun.update_state()`` looks those entries up with
``DeadlineAlertModel.get_by_id()`` and crashes (``'dict' object has no attribute 'hex'``),
so a successful run of ``dsr_access`` / ``dsr_portability`` fails the test. The scheduler
is not affected: it loads DAGs from the database, where ``deadline`` holds row ids.

:func:`deadline_pruning_fix` lets ``get_by_id`` accept such an entry and return a transient
(never saved) row built from it, which is what the upstream fix (apache/airflow#73430)
does. Remove it when Airflow ships that fix. Load it for a whole session with
``pytest -p tests.e2e.dag_test_fix`` or use the context manager around ``dag.test()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest.mock import patch

import pytest


@contextmanager
def deadline_pruning_fix() -> Iterator[None]:
    """Patch ``DeadlineAlertModel.get_by_id`` to accept encoded alerts (dicts) while active."""
    from airflow.models.deadline_alert import DeadlineAlert as DeadlineAlertModel

    original = DeadlineAlertModel.get_by_id

    def get_by_id(deadline_alert_id, *, session=None):
        if isinstance(deadline_alert_id, dict):
            alert = deadline_alert_id.get("__var", deadline_alert_id)
            return DeadlineAlertModel(
                name=alert.get("name"),
                reference=alert["reference"],
                interval=alert["interval"],
                callback_def=alert["callback"],
            )
        return original(deadline_alert_id, session=session)

    with patch.object(DeadlineAlertModel, "get_by_id", staticmethod(get_by_id)):
        yield


@pytest.fixture(autouse=True)
def _deadline_pruning_fix() -> Iterator[None]:
    with deadline_pruning_fix():
        yield
