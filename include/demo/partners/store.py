"""A partner's own copy of personal data: one SQLite file written by the demo world.

Storage contract: every table has an integer primary key ``id`` and nullable text columns
``email`` and ``phone``; other columns are free. A row belongs to the subject when
``lower(trim(email))`` equals the normalized email or ``phone`` equals the normalized
phone. Simulator bookkeeping lives in tables prefixed ``_sim_`` in the same file (so a
restarted simulator keeps its state); partner tables never get extra columns.

:class:`PartnerStore` acts on the data; the requests a partner received are recorded and
completed by :class:`~include.demo.partners.protocol.RequestBook`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from include.dsr.core.identities import normalize_email, normalize_phone

log = logging.getLogger(__name__)

SIM_PREFIX = "_sim_"
IDENTITY_TYPES = ("email", "phone")
REQUEST_TYPES = ("access", "portability", "erasure", "restriction", "restriction_lift", "rectification", "objection")
#: A rectification's ``corrections`` (an extension of OpenDSR 0.1): which columns each names.
CORRECTABLE = {
    "email": ("email",),
    "phone": ("phone",),
    "name": ("name", "full_name", "customer_name", "cardholder_name"),
    "company": ("company",),
}

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

    def rectify(self, identities: Mapping[str, str | None], corrections: Mapping[str, str]) -> Counts:
        """Write the corrected values into the subject's rows, in one transaction.

        :param corrections: ``email`` | ``phone`` | ``name`` | ``company`` -> the new value
        :returns: per table, the number of the subject's rows changed.
        """
        where, params = _match(identities)
        counts = {}
        with self.connect() as conn:
            for table in self._tables(conn):
                columns = {row[1] for row in conn.execute(f"PRAGMA table_info({_quote(table)})")}
                sets = [
                    (col, value) for key, value in corrections.items() for col in CORRECTABLE[key] if col in columns
                ]
                if not sets:
                    continue
                assignments = ", ".join(f"{_quote(col)} = ?" for col, _ in sets)
                counts[table] = conn.execute(
                    f"UPDATE {_quote(table)} SET {assignments} WHERE {where}", [*(v for _, v in sets), *params]
                ).rowcount
        return counts

    def apply(
        self, request_type: str, identities: Mapping[str, str | None], corrections: Mapping[str, str] | None = None
    ) -> tuple[Rows, Counts]:
        """Carry out one request on the partner's data.

        Access and portability return the rows; erasure deletes them; restriction and
        restriction_lift set or clear marks, as an objection does (the partner stops processing
        the rows for us); rectification writes the corrected values it was sent.

        :param request_type: one of :data:`REQUEST_TYPES`.
        :param identities: ``email`` and/or ``phone``.
        :returns: ``(records, affected)``: rows returned per table, row counts per table.
        """
        if request_type in ("access", "portability"):
            records = self.find(identities)
            return records, {table: len(rows) for table, rows in records.items()}
        actions = {
            "erasure": self.erase,
            "restriction": self.restrict,
            "restriction_lift": self.lift,
            "objection": self.restrict,
        }
        if request_type in actions:
            return {}, actions[request_type](identities)
        if request_type == "rectification":
            return {}, self.rectify(identities, corrections or {})
        raise ValueError(f"unknown request type {request_type!r}; valid types: {', '.join(REQUEST_TYPES)}")
