"""Error hierarchy of the engine.

``TerminalError`` means retrying cannot help (bad input, failed check, unknown system):
tasks turn it into ``AirflowFailException``. ``TransientError`` (timeouts, 5xx) is left to
Airflow's retries. Messages name the request by ``request_id`` only, never by identity.
"""


class DSRError(Exception):
    """Base class of every error the engine raises on purpose."""


class TerminalError(DSRError):
    """Retrying will not help: the input, the data map or a check is wrong."""


class TransientError(DSRError):
    """A dependency failed in a way that may succeed later (timeout, 5xx, connection reset)."""


class DataMapError(TerminalError):
    """The data map file is invalid; the message names the offending key."""


class RequestValidationError(TerminalError):
    """A request's conf is refused before anything is touched."""


class LedgerIntegrityError(TerminalError):
    """The ledger's event chain does not verify."""


class CheckFailedError(TerminalError):
    """A data-quality check (Great Expectations) failed; the message says which and why."""
