"""Alembic migrations of the request ledger (``versions/``); run by :func:`include.dsr.ledger.migrate.upgrade`."""
