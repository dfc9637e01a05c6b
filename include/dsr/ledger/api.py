"""The request ledger: evidence of every data-subject request (GDPR Art. 5(2), 24).

One row per request (``dsr_requests``), one row per request x system x action
(``dsr_request_systems``) and an append-only, hash-chained event log (``dsr_events``).
It keeps facts (ids, counts, S3 keys, partner references), never personal data: the
subject is known only by an HMAC fingerprint (:func:`subject_fingerprint`), and text,
payloads and evidence are screened for email addresses (a guard, not a guarantee; see
:func:`include.dsr.ledger.chain.reject_personal_data`).

Plain SQLAlchemy Core; the same code runs on SQLite and PostgreSQL. Writes are
serialised by one lock (see :mod:`include.dsr.ledger.store`); the tables are in
:mod:`include.dsr.ledger.schema`, the hash chain in :mod:`include.dsr.ledger.chain`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, select
from sqlalchemy.engine import make_url

from include.dsr.core.errors import TerminalError
from include.dsr.core.fingerprint import subject_fingerprint
from include.dsr.ledger import store
from include.dsr.ledger.chain import (
    ChainReport,
    canonical_json,
    check_text,
    raise_if_broken,
    reject_personal_data,
    verify_events,
)
from include.dsr.ledger.schema import (
    CLOSING_STATUSES,
    JURISDICTIONS,
    REQUEST_OUTCOMES,
    REQUEST_STATUSES,
    RIGHTS,
    SYSTEM_ACTIONS,
    SYSTEM_STATUSES,
    EventRow,
    PersonalDataError,
    RequestConflictError,
    RequestRow,
    SystemResultRow,
    UnknownRequestError,
    check_aware,
    check_choice,
    check_event_type,
    check_fingerprint,
    check_mapping,
    check_record_count,
    dsr_events,
    dsr_requests,
)

__all__ = [
    "ChainReport",
    "EventRow",
    "Ledger",
    "PersonalDataError",
    "RequestConflictError",
    "RequestClose",
    "RequestRow",
    "SystemResultRow",
    "UnknownRequestError",
    "subject_fingerprint",
]

logger = logging.getLogger(__name__)

_SUPPORTED_DIALECTS = ("sqlite", "postgresql")
_TEXT_MAX = 2000


@dataclass(frozen=True)
class RequestClose:
    """One request to close (:meth:`Ledger.close_requests`); the fields of :meth:`Ledger.close_request`."""

    request_id: str
    status: str
    closed_at: datetime
    outcome_summary: str
    outcome: str


def _refuse_repeats(what: str, request_ids: list[str]) -> None:
    """:raises TerminalError: a request id comes twice (each is compared with its row as read
    before the call, so a repeat would not see the first one's write)."""
    seen: set[str] = set()
    for rid in request_ids:
        if rid in seen:
            raise TerminalError(f"{what}: request_id {rid!r} is given twice; give each request once per call")
        seen.add(rid)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """Read and write the request ledger.

    :param url: SQLAlchemy URL, e.g. ``sqlite:////path/ledger.db`` or
        ``postgresql+psycopg2://user@host/db``.
    :param clock: returns the current aware time; injectable for tests.
    """

    def __init__(self, url: str, *, clock: Callable[[], datetime] | None = None) -> None:
        url_obj = make_url(url)
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url_obj.get_backend_name() == "sqlite":
            # Writers queue on BEGIN IMMEDIATE: wait up to 30 s instead of the default 5 s.
            kwargs["connect_args"] = {"timeout": 30}
        elif url_obj.get_driver_name() == "psycopg2":
            # A wave's many-row UPDATEs in pages of statements per round trip (psycopg2's
            # executemany sends one round trip per row; INSERTs are multi-row VALUES either way).
            kwargs["executemany_mode"] = "values_plus_batch"
        self._setup(create_engine(url_obj, **kwargs), owns_engine=True, clock=clock)

    @classmethod
    def from_engine(cls, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> Ledger:
        """Use an existing engine (e.g. from an Airflow hook); :meth:`close` leaves it open.

        On SQLite the engine must keep the ``sqlite3`` driver's default transaction
        handling (no ``BEGIN``-emitting event hooks, no ``autocommit=False`` connect
        argument): the ledger issues ``BEGIN IMMEDIATE`` itself for its writes.
        """
        ledger = cls.__new__(cls)
        ledger._setup(engine, owns_engine=False, clock=clock)
        return ledger

    def _setup(self, engine: Engine, *, owns_engine: bool, clock: Callable[[], datetime] | None) -> None:
        if engine.dialect.name not in _SUPPORTED_DIALECTS:
            raise TerminalError(f"the ledger supports {list(_SUPPORTED_DIALECTS)}, not {engine.dialect.name!r}")
        self._engine = engine
        self._owns_engine = owns_engine
        self._clock = clock or _utcnow
        self._batch: Connection | None = None

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine the ledger uses."""
        return self._engine

    def close(self) -> None:
        """Dispose of the engine if the ledger created it."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def batch(self) -> Iterator[Ledger]:
        """Every write (and read) inside the block in one transaction under the write lock: a
        wave's thousands of per-request rows and events commit together, or not at all. Nested
        blocks join the outer one. Not for use from several threads at once."""
        if self._batch is not None:
            yield self
            return
        with store.write_transaction(self._engine) as conn:
            self._batch = conn
            try:
                yield self
            finally:
                self._batch = None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        if self._batch is not None:
            yield self._batch
            return
        with store.write_transaction(self._engine) as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        if self._batch is not None:
            yield self._batch  # see the batch's own writes
            return
        with self._engine.connect() as conn:
            yield conn

    def _now(self) -> datetime:
        now = self._clock()
        check_aware("clock()", now)
        return now.astimezone(UTC)

    def create_schema(self) -> None:
        """Create the ledger, or upgrade it to the newest migration (idempotent; see :mod:`.migrate`)."""
        from include.dsr.ledger import migrate

        migrate.upgrade(self._engine)

    # -- requests -------------------------------------------------------------------

    def record_request(
        self,
        request_id: str,
        right: str,
        jurisdiction: str,
        subject_fingerprint: str,
        received_at: datetime,
        due_at: datetime,
        dag_run_id: str | None = None,
    ) -> RequestRow:
        """Record a new request, or return the recorded one when this is a re-run.

        A re-run (same ``request_id``, fingerprint and right) returns the existing row
        unchanged and appends no event. The first insert appends ``request.received``.

        :param subject_fingerprint: :func:`subject_fingerprint` of the subject's identities.
        :raises RequestConflictError: ``request_id`` is recorded for another subject or right.
        :raises TerminalError: on an invalid value.
        """
        new = NewRequest(request_id, right, jurisdiction, subject_fingerprint, received_at, due_at, dag_run_id)
        new.check()
        with self._write() as conn:
            existing = store.fetch_request(conn, request_id)
            if existing is not None:
                return _same_request_or_raise(existing, right, subject_fingerprint)
            now = self._now()
            values = new.values()
            conn.execute(
                dsr_requests.insert().values(
                    request_id=request_id,
                    subject_fingerprint=subject_fingerprint,
                    status="received",
                    created_at=now,
                    updated_at=now,
                    **values,
                )
            )
            dedupe_key = f"{request_id}:request.received"
            store.append_event_row(conn, now, request_id, "request.received", values, dedupe_key)
            row = store.require_request(conn, request_id)
        logger.info("ledger: request %s recorded (right=%s)", request_id, right)
        return row

    def get_request(self, request_id: str) -> RequestRow | None:
        """The request, or None when the ledger does not know it."""
        with self._read() as conn:
            return store.fetch_request(conn, request_id)

    def get_requests(self, request_ids: list[str]) -> dict[str, RequestRow]:
        """The known requests among ``request_ids`` (one query per thousand ids)."""
        with self._read() as conn:
            return store.fetch_requests(conn, request_ids)

    def record_requests(self, requests: list[NewRequest]) -> dict[str, RequestRow | TerminalError]:
        """:meth:`record_request` for many at once (a wave's lines): one read of those recorded
        already, one insert of the new rows and one of their ``request.received`` events.

        :returns: per request id its row (new, or the recorded one of a re-run), or the error
            :meth:`record_request` would raise (a bad value, the id recorded for another subject or
            right): nothing is written for that one, the others are recorded
        """
        outcome: dict[str, RequestRow | TerminalError] = {}
        valid: dict[str, NewRequest] = {}
        for new in requests:
            try:
                new.check()
            except TerminalError as exc:
                outcome[new.request_id] = exc
            else:
                valid.setdefault(new.request_id, new)  # the same id twice: the first one counts
        with self._write() as conn:
            stored = store.fetch_requests(conn, list(valid))
            now = self._now()
            rows: list[dict[str, Any]] = []
            events: list[store.NewEvent] = []
            for rid, new in valid.items():
                if rid in stored:
                    try:
                        outcome[rid] = _same_request_or_raise(stored[rid], new.right, new.subject_fingerprint)
                    except RequestConflictError as exc:
                        outcome[rid] = exc
                    continue
                values = new.values()
                rows.append({"request_id": rid, "subject_fingerprint": new.subject_fingerprint, **values})
                events.append((rid, "request.received", values, f"{rid}:request.received"))
            if rows:
                conn.execute(
                    dsr_requests.insert(),
                    [{**r, "status": "received", "created_at": now, "updated_at": now} for r in rows],
                )
                store.append_event_rows(conn, now, events)
                outcome.update(store.fetch_requests(conn, [r["request_id"] for r in rows]))
        logger.info("ledger: %s requests recorded (%s new)", len(requests), len(rows))
        return {new.request_id: outcome[new.request_id] for new in requests}  # in the order given

    def set_statuses(self, request_ids: list[str], status: str) -> dict[str, RequestRow]:
        """:meth:`set_status` for many requests at once (their outcome summaries kept): one read,
        one update of those whose status changes, one insert of their ``request.status_changed``.

        :raises UnknownRequestError: one of the requests is not recorded (nothing is written).
        """
        check_choice("status", status, REQUEST_STATUSES)
        with self._write() as conn:
            current = self._require_rows(conn, request_ids)
            changing = [current[rid] for rid in dict.fromkeys(request_ids) if current[rid].status != status]
            if not changing:
                return current
            now = self._now()
            events: list[store.NewEvent] = [
                (
                    row.request_id,
                    "request.status_changed",
                    {"from": row.status, "to": status, "outcome_summary": row.outcome_summary},
                    None,
                )
                for row in changing
            ]
            store.append_event_rows(conn, now, events)
            changed = store.update_requests(
                conn, [row.request_id for row in changing], {"status": status, "updated_at": now}
            )
        logger.info("ledger: %s requests now %s", len(changed), status)
        return {**current, **changed}

    def list_requests(self, status: str | None = None, open_only: bool = False) -> list[RequestRow]:
        """Requests ordered by ``received_at``.

        :param status: only requests in this status.
        :param open_only: only requests not closed yet (``closed_at`` is null).
        """
        query = select(dsr_requests).order_by(dsr_requests.c.received_at, dsr_requests.c.request_id)
        if status is not None:
            check_choice("status", status, REQUEST_STATUSES)
            query = query.where(dsr_requests.c.status == status)
        if open_only:
            query = query.where(dsr_requests.c.closed_at.is_(None))
        with self._read() as conn:
            return [RequestRow.from_mapping(row) for row in conn.execute(query).mappings()]

    def set_status(self, request_id: str, status: str, outcome_summary: str | None = None) -> RequestRow:
        """Move a request to ``status``; appends ``request.status_changed`` if anything changed.

        :param outcome_summary: short text without personal data; None keeps the current one.
        :raises UnknownRequestError: no such request.
        """
        check_choice("status", status, REQUEST_STATUSES)
        check_text("outcome_summary", outcome_summary, _TEXT_MAX, required=False)
        with self._write() as conn:
            current = store.require_request(conn, request_id)
            summary = current.outcome_summary if outcome_summary is None else outcome_summary
            if (current.status, current.outcome_summary) == (status, summary):
                return current
            payload = {"from": current.status, "to": status, "outcome_summary": summary}
            return self._change(
                conn, request_id, "request.status_changed", payload, status=status, outcome_summary=summary
            )

    def close_request(
        self, request_id: str, status: str, closed_at: datetime, outcome_summary: str, outcome: str | None = None
    ) -> RequestRow:
        """Close a request (answered, refused or given up); appends ``request.closed``.

        Closing again with the same status returns the row unchanged; another closing
        status is recorded as a new close (e.g. ``failed`` then ``completed`` after a resume).

        :param status: one of ``completed``, ``refused``, ``failed``.
        :param outcome: one of :data:`REQUEST_OUTCOMES`; default ``refused`` / ``failed`` for those
            statuses and ``data_provided`` for ``completed``.
        :raises UnknownRequestError: no such request.
        """
        outcome = outcome or {"completed": "data_provided"}.get(status, status)
        current, closed = self._close_many([RequestClose(request_id, status, closed_at, outcome_summary, outcome)])
        if request_id in closed:
            logger.info("ledger: request %s closed as %s", request_id, status)
        return {**current, **closed}[request_id]

    def close_requests(self, closes: list[RequestClose]) -> dict[str, RequestRow]:
        """:meth:`close_request` for many requests at once (a wave): one read, one insert of their
        ``request.closed`` events, one executemany update; those already closed alike are left.

        :raises UnknownRequestError: one of the requests is not recorded (nothing is written).
        """
        current, closed = self._close_many(closes)
        if closed:
            logger.info("ledger: %s requests closed", len(closed))
        return {**current, **closed}

    def _close_many(self, closes: list[RequestClose]) -> tuple[dict[str, RequestRow], dict[str, RequestRow]]:
        """The rows of ``closes`` as read, and the new rows of those that changed."""
        for close in closes:
            check_choice("closing status", close.status, CLOSING_STATUSES)
            check_choice("outcome", close.outcome, REQUEST_OUTCOMES)
            check_aware("closed_at", close.closed_at)
            check_text("outcome_summary", close.outcome_summary, _TEXT_MAX)
        _refuse_repeats("close_requests", [c.request_id for c in closes])
        with self._write() as conn:
            current = self._require_rows(conn, [c.request_id for c in closes])
            changing = {}
            for close in closes:
                row = current[close.request_id]
                if row.closed_at is None or (row.status, row.outcome) != (close.status, close.outcome):
                    changing[close.request_id] = {
                        "status": close.status,
                        "closed_at": close.closed_at,
                        "outcome_summary": close.outcome_summary,
                        "outcome": close.outcome,
                    }
            return current, self._change_each(conn, "request.closed", changing, changing)

    def set_packages(self, packages: list[tuple[str, str, datetime]]) -> dict[str, RequestRow]:
        """:meth:`set_package` for many ``(request_id, package_uri, expires_at)`` at once: one read,
        one insert of their ``package.link_issued`` events, one executemany update.

        :raises UnknownRequestError: one of the requests is not recorded (nothing is written).
        """
        for _, package_uri, expires_at in packages:
            check_text("package_uri", package_uri, 1024)
            check_aware("expires_at", expires_at)
        _refuse_repeats("set_packages", [rid for rid, *_ in packages])
        with self._write() as conn:
            current = self._require_rows(conn, [rid for rid, *_ in packages])
            values, payloads = {}, {}
            for rid, uri, expires_at in packages:
                if (current[rid].package_uri, current[rid].package_url_expires_at) != (uri, expires_at):
                    values[rid] = {"package_uri": uri, "package_url_expires_at": expires_at}
                    payloads[rid] = {"link_sha256": hashlib.sha256(uri.encode()).hexdigest(), "expires_at": expires_at}
            return {**current, **self._change_each(conn, "package.link_issued", payloads, values)}

    @staticmethod
    def _require_rows(conn: Connection, request_ids: list[str]) -> dict[str, RequestRow]:
        current = store.fetch_requests(conn, request_ids)
        missing = [rid for rid in request_ids if rid not in current]
        if missing:
            raise store.unknown_request(missing[0])
        return current

    def _change_each(
        self,
        conn: Connection,
        event_type: str,
        payloads: Mapping[str, Mapping[str, Any]],
        values: Mapping[str, Mapping[str, Any]],
    ) -> dict[str, RequestRow]:
        """:meth:`_change` for many requests: each one's event (in ``payloads`` order), then its values."""
        if not values:
            return {}
        now = self._now()
        store.append_event_rows(conn, now, [(rid, event_type, payload, None) for rid, payload in payloads.items()])
        return store.update_each_request(conn, {rid: {**row, "updated_at": now} for rid, row in values.items()})

    def set_package(self, request_id: str, package_uri: str, expires_at: datetime) -> RequestRow:
        """Record the export package and its link expiry; appends ``package.link_issued``.

        The event carries the expiry and a SHA-256 of the link, never the link itself: a
        presigned URL opens the package, and the event log is append-only.

        :param package_uri: where the subject fetches the package (a presigned URL or an S3 URI).
        :raises UnknownRequestError: no such request.
        """
        return self.set_packages([(request_id, package_uri, expires_at)])[request_id]

    def mark_metadata_purged(self, request_id: str, purged_at: datetime, changed: Mapping[str, int]) -> RequestRow:
        """Record that the Airflow metadata DB no longer holds the request's identities.

        Appends ``metadata.purged`` with the rows changed per table (counts only) the first time,
        and again whenever a later purge changed rows (a re-run's conf).
        """
        check_aware("purged_at", purged_at)
        check_mapping("changed", changed)
        with self._write() as conn:
            current = store.require_request(conn, request_id)
            if current.metadata_purged_at is not None and not any(changed.values()):
                return current
            return self._change(
                conn,
                request_id,
                "metadata.purged",
                {"purged_at": purged_at, "rows_changed": dict(changed)},
                metadata_purged_at=purged_at,
            )

    def extend(self, request_id: str, extended_due_at: datetime, reason: str) -> RequestRow:
        """Record an extension of the deadline; appends ``request.extended``.

        Only records: whether the extension is allowed is checked elsewhere.

        :raises UnknownRequestError: no such request.
        """
        check_aware("extended_due_at", extended_due_at)
        check_text("reason", reason, _TEXT_MAX)
        with self._write() as conn:
            current = store.require_request(conn, request_id)
            if (current.extended_due_at, current.extension_reason) == (extended_due_at, reason):
                return current
            payload = {"extended_due_at": extended_due_at, "reason": reason}
            values = {"extended_due_at": extended_due_at, "extension_reason": reason}
            return self._change(conn, request_id, "request.extended", payload, **values)

    def _change(
        self, conn: Connection, request_id: str, event_type: str, payload: Mapping[str, Any], **values: Any
    ) -> RequestRow:
        now = self._now()
        store.append_event_row(conn, now, request_id, event_type, payload)
        return store.update_request(conn, request_id, {**values, "updated_at": now})

    # -- systems --------------------------------------------------------------------

    def upsert_system_result(
        self,
        request_id: str,
        system: str,
        action: str,
        status: str,
        record_count: int | None = None,
        outcome: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> SystemResultRow:
        """Insert or update the row of ``(request_id, system, action)``.

        Every call increments ``attempts``. ``record_count``, ``outcome`` and
        ``evidence`` left as None keep their current value. A ``system.<status>``
        event is appended only when the row is new or its status changes.

        :param evidence: S3 keys, partner reference, counts per collection; no personal data.
        :raises UnknownRequestError: no such request.
        :raises PersonalDataError: ``outcome`` or ``evidence`` holds an email-like value.
        """
        _check_system_update(SystemUpdate(request_id, system, action, status, record_count, outcome, evidence))
        optional = {
            "record_count": record_count,
            "outcome": outcome,
            "evidence": canonical_json(dict(evidence)) if evidence is not None else None,
        }
        with self._write() as conn:
            store.require_request(conn, request_id)
            now = self._now()
            values = {"status": status, "updated_at": now}
            values |= {name: value for name, value in optional.items() if value is not None}
            before, after = store.save_system(conn, (request_id, system, action), values)
            if before is None or before.status != status:
                payload = _system_payload(before, after)
                store.append_event_row(conn, now, request_id, f"system.{status}", payload)
        logger.info("ledger: request %s system %s %s -> %s", request_id, system, action, status)
        return after

    def upsert_system_results(self, updates: list[SystemUpdate]) -> None:
        """:meth:`upsert_system_result` for many rows at once (a wave): the same rules (``attempts``
        incremented, a ``system.<status>`` event when the row is new or its status changes, None
        keeps a value), a few statements per thousand rows instead of six per row.

        :raises UnknownRequestError: one of the requests is not recorded (nothing is written).
        """
        for u in updates:
            _check_system_update(u)
        if not updates:
            return
        with self._write() as conn:
            ids = [u.request_id for u in updates]
            store.require_requests(conn, ids)
            now = self._now()
            stored = store.systems_of(conn, ids)
            current: dict[tuple[str, str, str], SystemResultRow] = {}
            events: list[tuple[str | None, str, Mapping[str, Any], str | None]] = []
            for u in updates:
                key = (u.request_id, u.system, u.action)
                before = current.get(key) or stored.get(key)
                after = SystemResultRow(
                    request_id=u.request_id,
                    system=u.system,
                    action=u.action,
                    status=u.status,
                    record_count=u.record_count
                    if u.record_count is not None
                    else getattr(before, "record_count", None),
                    outcome=u.outcome if u.outcome is not None else getattr(before, "outcome", None),
                    evidence=dict(u.evidence) if u.evidence is not None else (before.evidence if before else {}),
                    attempts=before.attempts + 1 if before else 1,
                    created_at=before.created_at if before else now,
                    updated_at=now,
                )
                current[key] = after
                if before is None or before.status != u.status:
                    events.append((u.request_id, f"system.{u.status}", _system_payload(before, after), None))
            rows = {
                key: {
                    **{c: getattr(row, c) for c in store.UPDATED_SYSTEM_COLUMNS},
                    "evidence": canonical_json(row.evidence),
                    "created_at": row.created_at,
                }
                for key, row in current.items()
            }
            store.save_systems(conn, rows, new={key for key in current if key not in stored})
            store.append_event_rows(conn, now, events)
        logger.info("ledger: %s system rows of %s requests written", len(updates), len(set(ids)))

    def append_events(self, events: list[tuple[str | None, str, Mapping[str, Any], str | None]]) -> int:
        """:meth:`append_event` for many ``(request_id, event_type, payload, dedupe_key)`` at once, in
        order, in one insert; events whose dedupe key is stored already are left out.

        :returns: how many were appended
        :raises UnknownRequestError: one of the requests is not recorded (nothing is written).
        """
        for _, event_type, _, dedupe_key in events:
            check_event_type(event_type)
            check_text("dedupe_key", dedupe_key, 255, required=False)
        if not events:
            return 0
        with self._write() as conn:
            store.require_requests(conn, [rid for rid, *_ in events if rid is not None])
            appended = store.append_event_rows(conn, self._now(), events)
        logger.info("ledger: %s events appended", appended)
        return appended

    def system_results_of(self, request_ids: list[str]) -> dict[str, list[SystemResultRow]]:
        """:meth:`system_results` of many requests (one query per thousand ids)."""
        found: dict[str, list[SystemResultRow]] = {rid: [] for rid in request_ids}
        with self._read() as conn:
            rows = store.systems_of(conn, request_ids)
        for key in sorted(rows):
            found[key[0]].append(rows[key])
        return found

    def events_of(self, request_ids: list[str], event_types: list[str] | None = None) -> dict[str, list[EventRow]]:
        """:meth:`events` of many requests (only of ``event_types`` if given), each in chain order."""
        with self._read() as conn:
            return store.events_of(conn, request_ids, event_types)

    def system_results(self, request_id: str) -> list[SystemResultRow]:
        """All system rows of a request, ordered by system then action."""
        with self._read() as conn:
            return store.list_systems(conn, request_id)

    # -- events ---------------------------------------------------------------------

    def append_event(
        self,
        request_id: str | None,
        event_type: str,
        payload: Mapping[str, Any],
        dedupe_key: str | None = None,
    ) -> EventRow:
        """Append one event to the chain.

        :param request_id: the request the event belongs to, or None for a global event.
        :param event_type: dotted lowercase name, e.g. ``partner.notified``.
        :param payload: facts only (ids, counts, keys); stored as canonical JSON.
        :param dedupe_key: when an event with this key exists, that event is returned and
            nothing is appended (e.g. ``"req-1:package.created"``).
        :raises UnknownRequestError: ``request_id`` is given but not recorded.
        :raises PersonalDataError: the payload holds an email-like value.
        """
        check_event_type(event_type)
        check_text("dedupe_key", dedupe_key, 255, required=False)
        with self._write() as conn:
            if request_id is not None:
                store.require_request(conn, request_id)
            event = store.append_event_row(conn, self._now(), request_id, event_type, payload, dedupe_key)
        logger.info("ledger: event seq %s (%s) for request %s", event.seq, event_type, request_id)
        return event

    def event_with_key(self, dedupe_key: str) -> EventRow | None:
        """The event appended with ``dedupe_key``, or None (an indexed lookup)."""
        with self._read() as conn:
            return store.fetch_event_by_dedupe_key(conn, dedupe_key)

    def last_event(self, event_type: str) -> EventRow | None:
        """The newest event of a type (one query in chain order, not the whole chain)."""
        query = select(dsr_events).where(dsr_events.c.event_type == event_type).order_by(dsr_events.c.seq.desc())
        with self._read() as conn:
            row = conn.execute(query.limit(1)).mappings().first()
        return EventRow.from_mapping(row) if row is not None else None

    def events(self, request_id: str | None = None) -> list[EventRow]:
        """Events in chain order; all of them, or only those of ``request_id``."""
        with self._read() as conn:
            return store.list_events(conn, request_id)

    def verify_chain(self) -> ChainReport:
        """Recompute the whole event chain and report the first broken row, if any."""
        query = select(dsr_events).order_by(dsr_events.c.seq)
        with self._engine.connect() as conn:  # committed rows only, streamed
            report = verify_events(conn.execution_options(yield_per=1000).execute(query).mappings())
        if report.ok:
            logger.info("ledger: event chain verified (%s events)", report.checked)
        else:
            logger.error("ledger: event chain broken at seq %s", report.first_broken_seq)
        return report

    def verify_chain_or_raise(self) -> ChainReport:
        """:meth:`verify_chain`, raising when the chain does not verify.

        :raises LedgerIntegrityError: with the reason of the first broken row.
        """
        return raise_if_broken(self.verify_chain())


def _same_request_or_raise(existing: RequestRow, right: str, fingerprint: str) -> RequestRow:
    if existing.subject_fingerprint != fingerprint or existing.right != right:
        raise RequestConflictError(
            f"request_id {existing.request_id!r} is already recorded for another subject or right; "
            "use a new request_id for a new request"
        )
    logger.info("ledger: request %s already recorded (re-run)", existing.request_id)
    return existing


@dataclass(frozen=True)
class NewRequest:
    """One request for :meth:`Ledger.record_requests` (the arguments of :meth:`Ledger.record_request`)."""

    request_id: str
    right: str
    jurisdiction: str
    subject_fingerprint: str
    received_at: datetime
    due_at: datetime
    dag_run_id: str | None = None

    def check(self) -> None:
        """:raises TerminalError: a bad value."""
        check_text("request_id", self.request_id, 128)
        check_choice("right", self.right, RIGHTS)
        check_choice("jurisdiction", self.jurisdiction, JURISDICTIONS)
        check_fingerprint(self.subject_fingerprint)
        check_aware("received_at", self.received_at)
        check_aware("due_at", self.due_at)
        check_text("dag_run_id", self.dag_run_id, 250, required=False)

    def values(self) -> dict[str, Any]:
        """The columns (besides id, fingerprint, status and times) and the ``request.received`` payload."""
        return {
            "right": self.right,
            "jurisdiction": self.jurisdiction,
            "received_at": self.received_at,
            "due_at": self.due_at,
            "dag_run_id": self.dag_run_id,
        }


@dataclass(frozen=True)
class SystemUpdate:
    """One row for :meth:`Ledger.upsert_system_results` (None keeps the stored value)."""

    request_id: str
    system: str
    action: str
    status: str
    record_count: int | None = None
    outcome: str | None = None
    evidence: Mapping[str, Any] | None = None


def _check_system_update(u: SystemUpdate) -> None:
    """:raises TerminalError: a bad value; :raises PersonalDataError: evidence holding an email."""
    check_text("system", u.system, 128)
    check_choice("action", u.action, SYSTEM_ACTIONS)
    check_choice("system status", u.status, SYSTEM_STATUSES)
    check_record_count(u.record_count)
    check_text("outcome", u.outcome, _TEXT_MAX, required=False)
    if u.evidence is not None:
        check_mapping("evidence", u.evidence)
        reject_personal_data(u.evidence, "evidence")


def _system_payload(before: SystemResultRow | None, after: SystemResultRow) -> dict[str, Any]:
    return {
        "system": after.system,
        "action": after.action,
        "status": after.status,
        "previous_status": before.status if before else None,
        "record_count": after.record_count,
        "outcome": after.outcome,
        "evidence": after.evidence,
        "attempts": after.attempts,
    }
