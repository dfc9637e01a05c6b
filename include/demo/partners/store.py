"""A partner's own copy of personal data: one SQLite file written by the demo world.

Storage contract: every table has an integer primary key ``id`` and nullable text columns
``email`` and ``phone``; other columns are free. A row belongs to the subject when
``lower(trim(email))`` equals the normalized email or ``phone`` equals the normalized
phone. Simulator bookkeeping lives in tables prefixed ``_sim_`` in the same file (so a
restarted simulator keeps its state); partner tables never get extra columns.

:class:`PartnerStore` acts on the data; :class:`RequestBook` records the requests a partner
received and completes them as the faults allow (both simulator channels share it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from include.demo.partners.faults import Faults, SimClock, to_iso
from include.dsr.pii import normalize_email, normalize_phone

log = logging.getLogger(__name__)

SIM_PREFIX = "_sim_"
IDENTITY_TYPES = ("email", "phone")
REQUEST_TYPES = ("access", "portability", "erasure", "restriction", "restriction_lift", "rectification")

Rows = dict[str, list[dict[str, Any]]]
Counts = dict[str, int]

_RESTRICTIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS _sim_restrictions (table_name TEXT NOT NULL, row_id INTEGER NOT NULL,
                                              PRIMARY KEY (table_name, row_id))
"""


def _quote(name: str) -> str:
    """Quote an SQL identifier taken from ``sqlite_master``."""
    return '"' + name.replace('"', '""') + '"'


def _match(identities: Mapping[str, str | None]) -> tuple[str, list[str]]:
    """SQL condition (and parameters) selecting the subject's rows.

    :param identities: ``email`` and/or ``phone``; values are normalized here.
    :raises ValueError: on an unknown identity type or when no usable identity is given.
    """
    unknown = sorted(set(identities) - set(IDENTITY_TYPES))
    if unknown:
        raise ValueError(f"unknown identity types: {', '.join(unknown)}")
    clauses, params = [], []
    email = normalize_email(identities.get("email"))
    if email:
        clauses.append("lower(trim(email)) = ?")
        params.append(email)
    phone = normalize_phone(identities.get("phone"))
    if phone:
        clauses.append("phone = ?")
        params.append(phone)
    if not clauses:
        raise ValueError("identities need an email or a phone")
    return "(" + " OR ".join(clauses) + ")", params


class PartnerStore:
    """Set-based reads, deletes and restriction marks on a partner's SQLite file.

    Every method opens its own short connection, so one store serves many threads.

    :param path: the partner's SQLite file (must exist with its tables).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"partner database {self.path} does not exist")
        with self.connect() as conn:
            conn.execute(_RESTRICTIONS_SCHEMA)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection committed on success, rolled back on error, always closed."""
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def tables(self) -> list[str]:
        """The partner's data tables (``_sim_`` and SQLite internal tables excluded)."""
        with self.connect() as conn:
            return self._tables(conn)

    @staticmethod
    def _tables(conn: sqlite3.Connection) -> list[str]:
        names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        return [name for (name,) in names if not name.startswith((SIM_PREFIX, "sqlite_"))]

    def find(self, identities: Mapping[str, str | None]) -> Rows:
        """The subject's rows, per table (every table listed, possibly empty).

        :param identities: ``email`` and/or ``phone``; a row matches if any one matches.
        """
        where, params = _match(identities)
        sql = "SELECT * FROM {} WHERE {} ORDER BY id"
        with self.connect() as conn:
            return {
                table: [dict(row) for row in conn.execute(sql.format(_quote(table), where), params)]
                for table in self._tables(conn)
            }

    def erase(self, identities: Mapping[str, str | None]) -> Counts:
        """Delete the subject's rows (and their restriction marks) in one transaction.

        :param identities: ``email`` and/or ``phone``.
        :returns: deleted row count per table.
        """
        where, params = _match(identities)
        counts = {}
        with self.connect() as conn:
            for table in self._tables(conn):
                conn.execute(
                    "DELETE FROM _sim_restrictions WHERE table_name = ? AND row_id IN "
                    f"(SELECT id FROM {_quote(table)} WHERE {where})",
                    [table, *params],
                )
                counts[table] = conn.execute(f"DELETE FROM {_quote(table)} WHERE {where}", params).rowcount
        return counts

    def restrict(self, identities: Mapping[str, str | None]) -> Counts:
        """Mark the subject's rows as restricted (idempotent).

        :returns: per table, the number of the subject's rows now restricted.
        """
        return self._mark(identities, "INSERT OR IGNORE INTO _sim_restrictions (table_name, row_id) VALUES (?, ?)")

    def lift(self, identities: Mapping[str, str | None]) -> Counts:
        """Remove the restriction marks of the subject's rows (idempotent).

        :returns: per table, the number of the subject's rows now unrestricted.
        """
        return self._mark(identities, "DELETE FROM _sim_restrictions WHERE table_name = ? AND row_id = ?")

    def _mark(self, identities: Mapping[str, str | None], statement: str) -> Counts:
        where, params = _match(identities)
        counts = {}
        with self.connect() as conn:
            for table in self._tables(conn):
                ids = [row_id for (row_id,) in conn.execute(f"SELECT id FROM {_quote(table)} WHERE {where}", params)]
                conn.executemany(statement, [(table, row_id) for row_id in ids])
                counts[table] = len(ids)
        return counts

    def restrictions(self) -> dict[str, list[int]]:
        """Restricted row ids per table (tables without marks left out)."""
        marks: dict[str, list[int]] = {}
        with self.connect() as conn:
            for table, row_id in conn.execute("SELECT table_name, row_id FROM _sim_restrictions ORDER BY 1, 2"):
                marks.setdefault(table, []).append(row_id)
        return marks

    def other_subject_rows(self, identities: Mapping[str, str | None], limit: int = 2) -> Rows:
        """Rows of somebody else, for the ``lie`` fault: the first rows per table with an
        email that do not match the subject by any identity.

        :param identities: the real subject's ``email`` and/or ``phone``.
        :param limit: at most this many rows per table.
        """
        where, params = _match(identities)
        sql = "SELECT * FROM {} WHERE trim(coalesce(email, '')) != '' AND NOT coalesce({}, 0) ORDER BY id LIMIT ?"
        with self.connect() as conn:
            rows = {
                table: [dict(row) for row in conn.execute(sql.format(_quote(table), where), [*params, limit])]
                for table in self._tables(conn)
            }
        return {table: found for table, found in rows.items() if found}

    def apply(self, request_type: str, identities: Mapping[str, str | None]) -> tuple[Rows, Counts]:
        """Carry out one request on the partner's data.

        Access and portability return the rows; erasure deletes them; restriction and
        restriction_lift set or clear marks; rectification only counts the rows it concerns
        (an OpenDSR 0.1 request carries no corrected values).

        :param request_type: one of :data:`REQUEST_TYPES`.
        :param identities: ``email`` and/or ``phone``.
        :returns: ``(records, affected)``: rows returned per table, row counts per table.
        """
        if request_type in ("access", "portability"):
            records = self.find(identities)
            return records, {table: len(rows) for table, rows in records.items()}
        actions = {"erasure": self.erase, "restriction": self.restrict, "restriction_lift": self.lift}
        if request_type in actions:
            return {}, actions[request_type](identities)
        if request_type == "rectification":
            return {}, {table: len(rows) for table, rows in self.find(identities).items()}
        raise ValueError(f"unknown request type {request_type!r}; valid types: {', '.join(REQUEST_TYPES)}")


class RequestConflict(ValueError):
    """A ``subject_request_id`` is reused for another request type or subject."""


_REQUESTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS _sim_requests (
    subject_request_id TEXT PRIMARY KEY, request_type TEXT NOT NULL, fingerprint TEXT NOT NULL,
    identities TEXT, fault TEXT NOT NULL, request_status TEXT NOT NULL, received_time TEXT NOT NULL,
    due_time TEXT, expected_completion_time TEXT NOT NULL, completed_time TEXT, result TEXT
)
"""


def _fingerprint(request_type: str, identities: Mapping[str, str]) -> str:
    """Digest of what a request asks, to detect a reused id without keeping identities."""
    canonical = json.dumps([request_type, sorted((k, v) for k, v in identities.items() if v)])
    return hashlib.sha256(canonical.encode()).hexdigest()


class RequestBook:
    """Requests a partner received (table ``_sim_requests``) and their completion.

    A request is recorded once per ``subject_request_id``; it completes when received, or
    lazily (on the first :meth:`get` after its due time) under ``late``, or never. The
    identities are kept only until completion; a digest of them stays for idempotency.

    :param store: the partner data completed requests act on.
    :param clock: the simulated clock that decides when late requests are due.
    """

    def __init__(self, store: PartnerStore, clock: SimClock) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        with store.connect() as conn:
            conn.execute(_REQUESTS_SCHEMA)

    def submit(self, request_id: str, request_type: str, identities: Mapping[str, str], faults: Faults) -> dict:
        """Record a request (idempotent on its id) and complete it if it is due.

        :param request_id: the client's ``subject_request_id``.
        :param request_type: one of :data:`REQUEST_TYPES`.
        :param identities: normalized ``email`` and/or ``phone``.
        :param faults: the faults in force, which decide when it completes and if it lies.
        :returns: the request as :meth:`get` returns it.
        :raises RequestConflict: the id is already used for another type or subject.
        """
        fingerprint = _fingerprint(request_type, identities)
        with self._lock:
            row = self._load(request_id)
            if row is None:
                received = self.clock.now()
                due, promised = faults.schedule(received)
                row = {
                    "subject_request_id": request_id, "request_type": request_type,
                    "fingerprint": fingerprint, "identities": json.dumps(dict(identities)),
                    "fault": faults.mode, "request_status": "pending", "received_time": to_iso(received),
                    "due_time": due and to_iso(due), "expected_completion_time": to_iso(promised),
                    "completed_time": None, "result": None,
                }
                with self.store.connect() as conn:
                    conn.execute(f"INSERT INTO _sim_requests ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                                 list(row.values()))
                log.info("%s: request %s (%s) received, fault mode %s", self.store.path.stem, request_id,
                         request_type, faults.mode)
            elif row["fingerprint"] != fingerprint:
                raise RequestConflict(f"subject_request_id {request_id} is already used for another request")
            return self._refresh(row)

    def get(self, request_id: str) -> dict | None:
        """A request, completed first if it is due; None if unknown.

        :returns: ``subject_request_id``, ``request_type``, ``request_status``
            (``pending`` | ``completed``), ``received_time``, ``expected_completion_time``,
            ``completed_time``, and ``records`` / ``affected`` (None until completed).
        """
        with self._lock:
            row = self._load(request_id)
            return None if row is None else self._refresh(row)

    def count(self) -> int:
        """How many requests the partner has received."""
        with self.store.connect() as conn:
            return conn.execute("SELECT count(*) FROM _sim_requests").fetchone()[0]

    def _load(self, request_id: str) -> dict | None:
        with self.store.connect() as conn:
            row = conn.execute("SELECT * FROM _sim_requests WHERE subject_request_id = ?", [request_id]).fetchone()
        return None if row is None else dict(row)

    def _refresh(self, row: dict) -> dict:
        due = row["due_time"]
        if row["request_status"] == "pending" and due and self.clock.now() >= datetime.fromisoformat(due):
            row = self._complete(row)
        result = json.loads(row["result"]) if row["result"] else {"records": None, "affected": None}
        public = {k: v for k, v in row.items() if k not in ("fingerprint", "identities", "fault", "due_time", "result")}
        return public | result

    def _complete(self, row: dict) -> dict:
        identities = json.loads(row["identities"])
        records, affected = self.store.apply(row["request_type"], identities)
        if row["fault"] == "lie":
            for table, rows in self.store.other_subject_rows(identities).items():
                records.setdefault(table, []).extend(rows)
        done = {
            "request_status": "completed", "completed_time": to_iso(self.clock.now()), "identities": None,
            "result": json.dumps({"records": records, "affected": affected}),
        }
        with self.store.connect() as conn:
            conn.execute(f"UPDATE _sim_requests SET {', '.join(f'{k} = ?' for k in done)} WHERE subject_request_id = ?",
                         [*done.values(), row["subject_request_id"]])
        log.info("%s: request %s (%s) completed, %d rows affected", self.store.path.stem, row["subject_request_id"],
                 row["request_type"], sum(affected.values()))
        return row | done
