"""Low-level ledger access on a SQLAlchemy ``Connection``: the write lock and row I/O.

:class:`include.dsr.ledger.api.Ledger` is the public API; this module holds the statements.

Concurrency. Every ledger write runs in one transaction opened by
:func:`write_transaction`, which takes the ledger's write lock first; the transaction
then reads the chain tip, writes, appends its event(s) and commits:

* PostgreSQL: ``pg_advisory_xact_lock(<constant key>)`` as the first statement, at READ
  COMMITTED. The lock exists even when the event table is empty (``SELECT ... FOR
  UPDATE`` on the last row has nothing to lock for the genesis event, and after a wait
  it re-checks the old last row, not the new one); it is released by COMMIT or
  ROLLBACK, so a crashed task cannot leave it behind. READ COMMITTED gives each later
  statement a fresh snapshot, so the tip read after the lock includes the previous
  holder's commit (REPEATABLE READ would not: its snapshot predates the wait).
* SQLite: ``BEGIN IMMEDIATE``. The connection is switched to driver autocommit so the
  ``sqlite3`` module does not issue its own deferred ``BEGIN``; IMMEDIATE takes the
  database's RESERVED lock before the tip is read, a second writer waits (busy
  timeout) instead of reading a stale tip, and no reader is ever upgraded to a writer,
  so writers cannot deadlock.

All writes (requests, system rows, events) take the same lock: ledger writes are few
and short, and one lock also makes the select-then-insert upserts race-free on both
backends. The ``seq`` primary key and the unique ``dedupe_key`` are the backstop:
should two writers ever race, one insert fails; the chain never forks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select, update

from include.dsr.ledger.chain import canonical_json, event_hash, reject_personal_data
from include.dsr.ledger.schema import (
    GENESIS_HASH,
    EventRow,
    RequestRow,
    SystemResultRow,
    UnknownRequestError,
    check_mapping,
    dsr_events,
    dsr_request_systems,
    dsr_requests,
)

#: Key of the PostgreSQL advisory lock that serialises ledger writes.
WRITE_LOCK_KEY = int.from_bytes(hashlib.sha256(b"fabconnect-dsr:ledger").digest()[:8], "big", signed=True)

SystemKey = tuple[str, str, str]
#: An event to append: ``(request_id or None, event_type, payload, dedupe_key or None)``.
NewEvent = tuple[str | None, str, Mapping[str, Any], str | None]


# ``conn.info`` key of the chain tip as this transaction left it: under the write lock nobody else
# appends, so after the first read each event of a transaction costs its insert alone.
_TIP = "dsr_ledger.chain_tip"
# ``conn.info`` key of the request rows this transaction read or wrote: under the write lock nobody
# else changes them, so a wave's steps (record, set status, append events, close) read each once.
_ROWS = "dsr_ledger.request_rows"


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction holding the ledger write lock; commits on success, rolls back on error."""
    with engine.connect() as conn:
        info = conn.info  # read once: after a lost connection, conn.info would reconnect to answer
        info[_TIP] = None  # the tip may be kept from here on (see _chain_tip)
        info[_ROWS] = {}  # request rows may be kept from here on (see fetch_request)
        try:
            if engine.dialect.name == "sqlite":
                yield from _sqlite_immediate(conn)
            else:
                conn.execution_options(isolation_level="READ COMMITTED")
                with conn.begin():
                    conn.execute(select(func.pg_advisory_xact_lock(WRITE_LOCK_KEY)))
                    yield conn
        finally:
            # conn.info outlives this checkout (it belongs to the pooled DBAPI connection): the
            # next transaction, on this connection or any other, reads the tip from the table
            info.pop(_TIP, None)
            info.pop(_ROWS, None)


def _sqlite_immediate(conn: Connection) -> Iterator[Connection]:
    conn.execution_options(isolation_level="AUTOCOMMIT")
    conn.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        dbapi = conn.connection.dbapi_connection
        if dbapi is not None and dbapi.in_transaction:
            conn.exec_driver_sql("ROLLBACK")
        raise
    conn.exec_driver_sql("COMMIT")


# -- requests -----------------------------------------------------------------------------


def fetch_request(conn: Connection, request_id: str) -> RequestRow | None:
    """The request row, or None (inside a :func:`write_transaction`, read once: see ``_ROWS``)."""
    kept = conn.info.get(_ROWS)
    if kept is not None and request_id in kept:
        return kept[request_id]
    row = conn.execute(select(dsr_requests).where(dsr_requests.c.request_id == request_id)).mappings().first()
    return keep_row(conn, RequestRow.from_mapping(row)) if row is not None else None


def keep_row(conn: Connection, row: RequestRow) -> RequestRow:
    """Remember a row as it now stands, inside a :func:`write_transaction` only; returns it."""
    kept = conn.info.get(_ROWS)
    if kept is not None:
        kept[row.request_id] = row
    return row


def require_request(conn: Connection, request_id: str) -> RequestRow:
    """The request row.

    :raises UnknownRequestError: the ledger does not know ``request_id``.
    """
    row = fetch_request(conn, request_id)
    if row is None:
        raise unknown_request(request_id)
    return row


def unknown_request(request_id: str) -> UnknownRequestError:
    return UnknownRequestError(f"request_id {request_id!r} is not in the ledger: record the request first")


def update_request(conn: Connection, request_id: str, values: Mapping[str, Any]) -> RequestRow:
    """Update columns of a request and return the new row (one ``UPDATE ... RETURNING``).

    :raises UnknownRequestError: the ledger does not know ``request_id``.
    """
    statement = update(dsr_requests).where(dsr_requests.c.request_id == request_id).values(**values)
    row = conn.execute(statement.returning(*dsr_requests.c)).mappings().first()
    if row is None:
        raise unknown_request(request_id)
    return keep_row(conn, RequestRow.from_mapping(row))


# -- systems ------------------------------------------------------------------------------


def _system_where(key: SystemKey) -> Any:
    table = dsr_request_systems.c
    return (table.request_id == key[0]) & (table.system == key[1]) & (table.action == key[2])


def fetch_system(conn: Connection, key: SystemKey) -> SystemResultRow | None:
    """The ``(request_id, system, action)`` row, or None."""
    row = conn.execute(select(dsr_request_systems).where(_system_where(key))).mappings().first()
    return SystemResultRow.from_mapping(row) if row is not None else None


def save_system(
    conn: Connection, key: SystemKey, values: Mapping[str, Any]
) -> tuple[SystemResultRow | None, SystemResultRow]:
    """Insert the row with ``attempts`` 1, or update it and increment ``attempts``.

    :param values: columns to set; must hold ``status`` and ``updated_at``.
    :returns: the row before (None when new) and after.
    """
    before = fetch_system(conn, key)
    if before is None:
        columns = {"evidence": "{}", **values, "created_at": values["updated_at"], "attempts": 1}
        conn.execute(dsr_request_systems.insert().values(request_id=key[0], system=key[1], action=key[2], **columns))
    else:
        statement = update(dsr_request_systems).where(_system_where(key))
        conn.execute(statement.values(attempts=before.attempts + 1, **values))
    after = fetch_system(conn, key)
    assert after is not None
    return before, after


def list_systems(conn: Connection, request_id: str) -> list[SystemResultRow]:
    """All system rows of a request, ordered by system then action."""
    table = dsr_request_systems.c
    query = select(dsr_request_systems).where(table.request_id == request_id).order_by(table.system, table.action)
    return [SystemResultRow.from_mapping(row) for row in conn.execute(query).mappings()]


# -- events -------------------------------------------------------------------------------


def fetch_event_by_dedupe_key(conn: Connection, dedupe_key: str) -> EventRow | None:
    """The event stored with ``dedupe_key``, or None."""
    row = conn.execute(select(dsr_events).where(dsr_events.c.dedupe_key == dedupe_key)).mappings().first()
    return EventRow.from_mapping(row) if row is not None else None


def append_event_row(
    conn: Connection,
    created_at: datetime,
    request_id: str | None,
    event_type: str,
    payload: Mapping[str, Any],
    dedupe_key: str | None = None,
) -> EventRow:
    """Append one event at the chain tip; ``conn`` must be in a :func:`write_transaction`.

    :returns: the new event, or the existing one when ``dedupe_key`` is already stored.
    :raises PersonalDataError: the payload holds an email-like value.
    """
    if dedupe_key is not None:
        existing = fetch_event_by_dedupe_key(conn, dedupe_key)
        if existing is not None:
            return existing
    seq, prev_hash = _chain_tip(conn)
    values = _chained_row(seq + 1, prev_hash, created_at, request_id, event_type, payload, dedupe_key)
    conn.execute(dsr_events.insert().values(**values))
    _keep_tip(conn, values["seq"], values["hash"])
    return EventRow.from_mapping(values)


def _chain_tip(conn: Connection) -> tuple[int, str]:
    """``(seq, hash)`` of the newest event, or ``(0, GENESIS_HASH)`` for an empty chain: what this
    write transaction appended last, else read from the table."""
    kept = conn.info.get(_TIP)
    if kept is not None:
        return kept
    tip = conn.execute(select(dsr_events.c.seq, dsr_events.c.hash).order_by(dsr_events.c.seq.desc()).limit(1)).first()
    return (tip.seq, tip.hash) if tip is not None else (0, GENESIS_HASH)


def _keep_tip(conn: Connection, seq: int, hash_: str) -> None:
    """Remember the tip after a successful insert, inside a :func:`write_transaction` only."""
    if _TIP in conn.info:
        conn.info[_TIP] = (seq, hash_)


def _chained_row(
    seq: int,
    prev_hash: str,
    created_at: datetime,
    request_id: str | None,
    event_type: str,
    payload: Mapping[str, Any],
    dedupe_key: str | None,
) -> dict[str, Any]:
    """The ``dsr_events`` row at ``seq`` after ``prev_hash`` (payload checked for personal data)."""
    check_mapping("payload", payload)
    reject_personal_data(payload, "payload")
    payload_json = canonical_json(dict(payload))
    return {
        "seq": seq,
        "request_id": request_id,
        "event_type": event_type,
        "payload": payload_json,
        "created_at": created_at,
        "prev_hash": prev_hash,
        "hash": event_hash(prev_hash, seq, request_id, event_type, payload_json, created_at),
        "dedupe_key": dedupe_key,
    }


def list_events(conn: Connection, request_id: str | None = None) -> list[EventRow]:
    """Events in chain order; all of them, or only those of ``request_id``."""
    query = select(dsr_events).order_by(dsr_events.c.seq)
    if request_id is not None:
        query = query.where(dsr_events.c.request_id == request_id)
    return [EventRow.from_mapping(row) for row in conn.execute(query).mappings()]


# -- many at once (waves) -------------------------------------------------------------------

IN_CHUNK = 1000  # ids per IN (...) list: well under every backend's bound-parameter limit


def _chunks(items: list, size: int = IN_CHUNK) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def fetch_requests(conn: Connection, request_ids: list[str]) -> dict[str, RequestRow]:
    """The recorded ones among ``request_ids``, read from the table (a transaction keeps them)."""
    found: dict[str, RequestRow] = {}
    for chunk in _chunks(sorted(set(request_ids))):
        for row in conn.execute(select(dsr_requests).where(dsr_requests.c.request_id.in_(chunk))).mappings():
            found[row["request_id"]] = keep_row(conn, RequestRow.from_mapping(row))
    return found


def update_requests(conn: Connection, request_ids: list[str], values: Mapping[str, Any]) -> dict[str, RequestRow]:
    """Set the same ``values`` on many requests (one ``UPDATE`` per thousand ids); their new rows."""
    for chunk in _chunks(sorted(set(request_ids))):
        conn.execute(update(dsr_requests).where(dsr_requests.c.request_id.in_(chunk)).values(**values))
    return fetch_requests(conn, request_ids)


def update_each_request(conn: Connection, values: Mapping[str, Mapping[str, Any]]) -> dict[str, RequestRow]:
    """Set each request's own values (the same columns for all) in one executemany ``UPDATE``;
    their new rows (read back one query per thousand ids)."""
    if not values:
        return {}
    columns = sorted({column for row in values.values() for column in row})
    statement = (
        update(dsr_requests)
        .where(dsr_requests.c.request_id == bindparam("k_request_id"))
        .values({c: bindparam(c) for c in columns})
    )
    conn.execute(statement, [{"k_request_id": rid, **row} for rid, row in values.items()])
    return fetch_requests(conn, list(values))


def require_requests(conn: Connection, request_ids: list[str]) -> None:
    """:raises UnknownRequestError: one of ``request_ids`` is not in the ledger."""
    wanted = sorted(set(request_ids))
    known: set[str] = set()
    for chunk in _chunks(wanted):
        query = select(dsr_requests.c.request_id).where(dsr_requests.c.request_id.in_(chunk))
        known.update(conn.execute(query).scalars())
    missing = [rid for rid in wanted if rid not in known]
    if missing:
        raise unknown_request(missing[0])


def systems_of(conn: Connection, request_ids: list[str]) -> dict[SystemKey, SystemResultRow]:
    """Every system row of ``request_ids``, by ``(request_id, system, action)``."""
    found = {}
    table = dsr_request_systems.c
    for chunk in _chunks(sorted(set(request_ids))):
        for row in conn.execute(select(dsr_request_systems).where(table.request_id.in_(chunk))).mappings():
            found[(row["request_id"], row["system"], row["action"])] = SystemResultRow.from_mapping(row)
    return found


def save_systems(conn: Connection, rows: dict[SystemKey, dict[str, Any]], new: set[SystemKey]) -> None:
    """Write final column values: ``new`` keys inserted, the others updated (one statement each kind)."""
    inserts = [{"request_id": k[0], "system": k[1], "action": k[2], **v} for k, v in rows.items() if k in new]
    if inserts:
        conn.execute(dsr_request_systems.insert(), inserts)
    changed = [k for k in rows if k not in new]
    if changed:
        t = dsr_request_systems
        statement = (
            update(t)
            .where(
                (t.c.request_id == bindparam("k_request_id"))
                & (t.c.system == bindparam("k_system"))
                & (t.c.action == bindparam("k_action"))
            )
            .values({c: bindparam(c) for c in UPDATED_SYSTEM_COLUMNS})
        )
        conn.execute(
            statement,
            [
                {
                    "k_request_id": k[0],
                    "k_system": k[1],
                    "k_action": k[2],
                    **{c: rows[k][c] for c in UPDATED_SYSTEM_COLUMNS},
                }
                for k in changed
            ],
        )


UPDATED_SYSTEM_COLUMNS = ("status", "record_count", "outcome", "evidence", "attempts", "updated_at")


def events_of(
    conn: Connection, request_ids: list[str], event_types: list[str] | None = None
) -> dict[str, list[EventRow]]:
    """Events of each of ``request_ids`` (only of ``event_types`` if given), in chain order."""
    found: dict[str, list[EventRow]] = {rid: [] for rid in request_ids}
    for chunk in _chunks(sorted(set(request_ids))):
        query = select(dsr_events).where(dsr_events.c.request_id.in_(chunk)).order_by(dsr_events.c.seq)
        if event_types is not None:
            query = query.where(dsr_events.c.event_type.in_(event_types))
        for row in conn.execute(query).mappings():
            found[row["request_id"]].append(EventRow.from_mapping(row))
    for rows in found.values():
        rows.sort(key=lambda e: e.seq)
    return found


def append_event_rows(conn: Connection, created_at: datetime, events: Sequence[NewEvent]) -> int:
    """Append ``(request_id, event_type, payload, dedupe_key)`` events at the chain tip in one insert;
    those whose dedupe key is stored already (or repeated in ``events``) are left out.

    :returns: how many were appended
    """
    keys = [key for *_, key in events if key is not None]
    stored: set[str] = set()
    for chunk in _chunks(sorted(set(keys))):
        stored.update(conn.execute(select(dsr_events.c.dedupe_key).where(dsr_events.c.dedupe_key.in_(chunk))).scalars())
    seq, prev_hash = _chain_tip(conn)
    rows = []
    for request_id, event_type, payload, dedupe_key in events:
        if dedupe_key is not None:
            if dedupe_key in stored:
                continue
            stored.add(dedupe_key)
        seq += 1
        rows.append(_chained_row(seq, prev_hash, created_at, request_id, event_type, payload, dedupe_key))
        prev_hash = rows[-1]["hash"]
    if rows:
        conn.execute(dsr_events.insert(), rows)
        _keep_tip(conn, rows[-1]["seq"], rows[-1]["hash"])
    return len(rows)
