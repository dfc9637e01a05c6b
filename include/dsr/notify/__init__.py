"""Mail and notices: what the subject and ops are told, rendered from templates and recorded once.

Imports ``ledger`` (to record a notice) and ``connections`` (SMTP); never the rights or Airflow itself.
"""
