"""Tables, value sets and row types of the request ledger (SQLAlchemy Core, no ORM).

The same definitions run on SQLite (demo, tests) and PostgreSQL (production). Every
timestamp column uses :class:`UTCDateTime`, so values always read back as
timezone-aware UTC datetimes whatever the backend stores.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from include.dsr.core.errors import TerminalError

RIGHTS = ("access", "portability", "erasure", "restriction", "rectification", "objection")
JURISDICTIONS = ("GDPR", "CCPA")
REQUEST_STATUSES = (
    "received",
    "verifying",
    "in_progress",
    "waiting_on_partner",
    "completed",
    "refused",
    "failed",
)
#: Statuses :meth:`Ledger.close_request` accepts.
CLOSING_STATUSES = ("completed", "refused", "failed")
#: What a closed request's answer was: data handed over; a valid answer that no personal data was
#: found (Art. 15); done, but with exceptions the subject is told of (a partner that refused or never
#: answered); refused (Art. 12(4)); given up.
REQUEST_OUTCOMES = (
    "data_provided",
    "erased",
    "erased_with_holds",  # a partial refusal (Art. 12(4)): data under a legal obligation kept, restricted
    "no_personal_data_found",
    "completed_with_exceptions",
    "restricted",  # Art. 18: only storage continues
    "restriction_lifted",  # Art. 18(3): after the subject was told
    "rectified",  # Art. 16
    "processing_stopped",  # Art. 21 objection upheld, or Art. 7(3) consent withdrawn
    "refused",
    "failed",
)
SYSTEM_ACTIONS = ("locate", "export", "erase", "restrict", "lift", "notify", "rectify")
SYSTEM_STATUSES = ("pending", "waiting", "completed", "failed", "skipped")

#: ``prev_hash`` of the first event of the chain.
GENESIS_HASH = "0" * 64


class RequestConflictError(TerminalError):
    """A ``request_id`` was reused for another subject or another right."""


class UnknownRequestError(TerminalError):
    """The ledger holds no request with this ``request_id``."""


class PersonalDataError(TerminalError):
    """A value headed for the ledger looks like personal data (an email address)."""


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that only accepts and returns aware UTC datetimes.

    SQLite has no time zone type: values are stored as UTC wall time and the UTC
    ``tzinfo`` is put back on read. PostgreSQL returns ``timestamptz`` in the session
    time zone, which is converted to UTC on read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise TerminalError("ledger timestamps must be timezone-aware datetimes")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)


def as_utc(value: datetime | None) -> datetime | None:
    """Return ``value`` as an aware UTC datetime; naive values are taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


metadata = MetaData()

dsr_requests = Table(
    "dsr_requests",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("right", String(32), nullable=False),
    Column("jurisdiction", String(16), nullable=False),
    Column("subject_fingerprint", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("due_at", UTCDateTime(), nullable=False),
    Column("extended_due_at", UTCDateTime(), nullable=True),
    Column("extension_reason", Text, nullable=True),
    Column("closed_at", UTCDateTime(), nullable=True),
    Column("dag_run_id", String(250), nullable=True),
    Column("package_uri", String(1024), nullable=True),
    Column("package_url_expires_at", UTCDateTime(), nullable=True),
    Column("outcome_summary", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # What the answer was (REQUEST_OUTCOMES), beside how the request closed (status).
    Column("outcome", String(40), nullable=True),
    # When the Airflow metadata DB was cleared of this request's identities (see orchestration.metadata_purge).
    Column("metadata_purged_at", UTCDateTime(), nullable=True),
    Index("ix_dsr_requests_status", "status"),
    Index("ix_dsr_requests_subject_fingerprint", "subject_fingerprint"),
)

# The composite primary key is the (request_id, system, action) uniqueness: one row
# per request x system x action, updated in place when a request is re-run.
dsr_request_systems = Table(
    "dsr_request_systems",
    metadata,
    Column("request_id", String(128), ForeignKey("dsr_requests.request_id"), primary_key=True),
    Column("system", String(128), primary_key=True),
    Column("action", String(32), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("record_count", Integer, nullable=True),
    Column("outcome", Text, nullable=True),
    Column("evidence", Text, nullable=False, default="{}"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Append-only. ``seq`` is assigned by the ledger under the chain lock, not by the
# database, so that it is gap-free and equals the position in the hash chain.
dsr_events = Table(
    "dsr_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("request_id", String(128), nullable=True),
    Column("event_type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("dedupe_key", String(255), nullable=True, unique=True),
    Index("ix_dsr_events_request_id", "request_id"),
)


# -- registries the product keeps beside the ledger (same database, facts only) ------------

# Keyed hashes (HMAC) of the identities a request resolved to: later requests of the same
# person (an erasure finding the packages of an earlier access request) are found by them.
dsr_subject_keys = Table(
    "dsr_subject_keys",
    metadata,
    Column("request_id", String(128), ForeignKey("dsr_requests.request_id"), primary_key=True),
    Column("key_type", String(16), primary_key=True),
    Column("key_hash", String(64), primary_key=True),
    Index("ix_dsr_subject_keys_key_hash", "key_hash"),
)

# Rows an erasure kept under a legal obligation (Art. 17(3)(b), (e)): stripped to what the law
# requires, restricted, until ``retain_until``; the retention run deletes them then.
dsr_held_data = Table(
    "dsr_held_data",
    metadata,
    Column("request_id", String(128), ForeignKey("dsr_requests.request_id"), primary_key=True),
    Column("system", String(128), primary_key=True),
    Column("collection", String(128), primary_key=True),
    Column("row_key", String(128), primary_key=True),
    Column("fields_kept", Text, nullable=False),
    Column("basis", Text, nullable=False),
    Column("retain_until", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("closed_at", UTCDateTime(), nullable=True),
    Index("ix_dsr_held_data_due", "status", "retain_until"),
)

# Legal holds ops place (litigation, a tax audit): nothing under a hold is deleted by the
# retention run. A hold covers one subject (an account id, or the keyed hash of an email) or a
# whole collection; it ends at ``until`` or when released.
dsr_legal_holds = Table(
    "dsr_legal_holds",
    metadata,
    Column("hold_id", String(64), primary_key=True),
    Column("scope", String(16), nullable=False),  # subject | collection
    Column("system", String(128), nullable=False),
    Column("collection", String(128), nullable=True),  # a collection hold; NULL: every collection
    Column("account_id", String(32), nullable=True),
    Column("key_hash", String(64), nullable=True),
    Column("reason", Text, nullable=False),
    Column("until", UTCDateTime(), nullable=True),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("released_at", UTCDateTime(), nullable=True),
    Column("released_by", String(128), nullable=True),
    Index("ix_dsr_legal_holds_open", "released_at", "until"),
)


@dataclass(frozen=True)
class RequestRow:
    """One data-subject request (a row of ``dsr_requests``)."""

    request_id: str
    right: str
    jurisdiction: str
    subject_fingerprint: str
    status: str
    received_at: datetime
    due_at: datetime
    extended_due_at: datetime | None
    extension_reason: str | None
    closed_at: datetime | None
    dag_run_id: str | None
    package_uri: str | None
    package_url_expires_at: datetime | None
    outcome_summary: str | None
    created_at: datetime
    updated_at: datetime
    outcome: str | None = None
    metadata_purged_at: datetime | None = None

    @property
    def effective_due_at(self) -> datetime:
        """The deadline in force: the extended one when an extension was recorded."""
        return self.extended_due_at or self.due_at

    @property
    def is_open(self) -> bool:
        """True until :meth:`Ledger.close_request` has been called."""
        return self.closed_at is None

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> RequestRow:
        """Build from a result row mapping of ``dsr_requests``."""
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class SystemResultRow:
    """Outcome of one action on one system for one request (``dsr_request_systems``)."""

    request_id: str
    system: str
    action: str
    status: str
    record_count: int | None
    outcome: str | None
    evidence: dict[str, Any]
    attempts: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> SystemResultRow:
        """Build from a result row mapping of ``dsr_request_systems``."""
        values = {name: row[name] for name in cls.__dataclass_fields__}
        values["evidence"] = json.loads(row["evidence"] or "{}")
        return cls(**values)


@dataclass(frozen=True)
class EventRow:
    """One entry of the hash-chained event log (``dsr_events``)."""

    seq: int
    request_id: str | None
    event_type: str
    payload_json: str
    created_at: datetime
    prev_hash: str
    hash: str
    dedupe_key: str | None

    @property
    def payload(self) -> dict[str, Any]:
        """The payload, parsed from its canonical JSON text."""
        return json.loads(self.payload_json)

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> EventRow:
        """Build from a result row mapping of ``dsr_events``."""
        values = {name: row[name] for name in cls.__dataclass_fields__ if name != "payload_json"}
        return cls(payload_json=row["payload"], **values)


# -- value checks shared by the ledger API -----------------------------------------------

_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """:raises TerminalError: ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise TerminalError(f"unknown {name} {value!r}: expected one of {list(allowed)}")


def check_aware(name: str, value: object) -> None:
    """:raises TerminalError: ``value`` is not a timezone-aware datetime."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise TerminalError(f"{name} must be a timezone-aware datetime")


def check_fingerprint(value: object) -> None:
    """:raises TerminalError: ``value`` is not a 64-hex HMAC (e.g. a raw identity was passed)."""
    if not isinstance(value, str) or not _FINGERPRINT.match(value):
        raise TerminalError("subject_fingerprint must be the 64-hex HMAC from subject_fingerprint()")


def check_event_type(value: object) -> None:
    """:raises TerminalError: ``value`` is not a dotted lowercase name of at most 64 characters."""
    if not isinstance(value, str) or len(value) > 64 or not _EVENT_TYPE.match(value):
        raise TerminalError(f"event_type {value!r} must be a dotted lowercase name, e.g. system.completed")


def check_mapping(name: str, value: object) -> None:
    """:raises TerminalError: ``value`` is not a mapping (a JSON object)."""
    if not isinstance(value, Mapping):
        raise TerminalError(f"{name} must be a mapping (a JSON object), not {type(value).__name__}")


def check_record_count(value: object) -> None:
    """:raises TerminalError: ``value`` is neither None nor a non-negative integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise TerminalError("record_count must be a non-negative integer")
