"""Registers the DSR deadline reference with Airflow (custom references need a plugin).

The right DAGs' Deadline Alert uses :class:`include.dsr.orchestration.deadline_alert.RequestDueDeadline`;
the scheduler resolves it by its class path among the plugins' ``deadline_references``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from include.dsr.orchestration.deadline_alert import RequestDueDeadline


class DsrDeadlineReferencesPlugin(AirflowPlugin):
    """Adds :class:`RequestDueDeadline` to Airflow's deadline references."""

    name = "dsr_deadline_references"
    deadline_references = [RequestDueDeadline]
