"""Deadlines and what compliance watches: due dates, extensions and pauses, status, figures.

Pure functions over ledger rows plus the hourly monitor's alerts (through ``notify``).
Must not import ``rights``, ``orchestration`` or Airflow.
"""
