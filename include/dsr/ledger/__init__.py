"""The request ledger: one row per request and per request x system, and a hash-chained event log.

Owns its tables, their Alembic migrations and the chain. Imports only ``core``: it keeps
facts (ids, counts, fingerprints), never personal data.
"""

from include.dsr.ledger.api import Ledger
from include.dsr.ledger.schema import EventRow, RequestRow, SystemResultRow

__all__ = ["EventRow", "Ledger", "RequestRow", "SystemResultRow"]
