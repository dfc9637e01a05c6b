"""The steps of each right as plain functions of a ``Runtime``: shared intake, then the right's own steps.

``intake`` (validate, record, verify, resolve) is shared; ``gathering`` holds access and
portability. A new right gets its own module here. Must not import ``orchestration`` or Airflow.
"""
