"""Connector for the platform database (SQLite in the demo, PostgreSQL in production).

One indexed, set-based query per collection and batch: a row belongs to a subject when
one of its identity fields holds one of the subject's identities or when it references one
of the subject's accounts. The query selects a superset on the indexed lookup keys and every
row is then checked exactly (:mod:`include.dsr.identity.matching`), so SQLite and PostgreSQL
under any collation return the same rows. A second, separate query counts the subjects' rows
for the checks, in the same snapshot. Tables are read through the data map's field lists, so
unmapped columns are never read; their names are reflected for the checks, which fail on a
column the data map does not list.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

from include.dsr.connectors.base import REQUEST_ID_COLUMN, BaseConnector, ExportResult
from include.dsr.core.identities import remembering_email_keys
from include.dsr.identity.matching import IDENTITY_TYPES, LinkColumn, link_columns, matched_identities, where_any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from include.dsr.connectors.sql_erasure import RowChanges
    from include.dsr.core.data_map import Collection, System
    from include.dsr.identity.resolver import ResolvedSubject

log = logging.getLogger(__name__)


class SqlDatabaseConnector(BaseConnector):
    """:param engine: optional engine (tests); by default built from the system's connection."""

    channel: ClassVar[str] = "database"
    capabilities: ClassVar[frozenset[str]] = frozenset({"test_connection", "locate", "export", "erase"})
    # Override to link rows through another collection's primary key.
    account_collection: ClassVar[str] = "accounts"

    def __init__(self, system: System, engine: Engine | None = None) -> None:
        super().__init__(system)
        self._engine = engine

    @cached_property
    def engine(self) -> Engine:
        from include.dsr.connections import engine_for

        return self._engine or engine_for(self.system.connection_id)

    def test_connection(self) -> None:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def _link_columns(self, coll: Collection) -> list[LinkColumn]:
        return link_columns(coll, self.account_collection)

    @staticmethod
    def _wanted(subjects: list[ResolvedSubject]) -> dict[str, set]:
        merged: dict[str, set] = {identity: set() for identity in IDENTITY_TYPES}
        for s in subjects:
            for identity, bucket in merged.items():
                bucket |= s.identity_values(identity)
        return merged

    def _count(self, conn: Connection, coll: Collection, owners: _Owners) -> int:
        """The source's own count of the subjects' rows: a separate query, checked exactly."""
        from sqlalchemy import column, select, table

        links = self._link_columns(coll)
        names = sorted({coll.primary_key, *(c.name for c in links)})
        t = table(coll.name, *(column(n) for n in names))
        rows = conn.execute(select(t).where(where_any(t, links, owners.wanted))).mappings()
        return sum(1 for row in rows if owners.of(row, links))

    def _snapshot(self):
        """A connection whose reads all see one snapshot, so the rows exported and the count the
        checks compare them with agree even while the platform keeps writing (PostgreSQL:
        REPEATABLE READ; SQLite's demo DB has one writer and reads in autocommit)."""
        conn = self.engine.connect()
        if self.engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        return conn

    @remembering_email_keys
    def locate(self, subjects: list[ResolvedSubject]) -> dict[str, int]:
        owners = _Owners(subjects, self._wanted(subjects))
        with self.engine.connect() as conn:
            return {
                coll.name: self._count(conn, coll, owners)
                for coll in self.system.collections
                if coll.personal and self._link_columns(coll)
            }

    @remembering_email_keys
    def export(self, subjects: list[ResolvedSubject], collections: list[Collection] | None = None) -> ExportResult:
        import pandas as pd
        from sqlalchemy import column, inspect, select, table

        owners = _Owners(subjects, self._wanted(subjects))
        result = ExportResult(self.system.key)
        with self._snapshot() as conn:
            for coll in collections or [c for c in self.system.collections if c.personal]:
                links = self._link_columns(coll)
                t = table(coll.name, *(column(f) for f in coll.field_names))
                cursor = conn.execute(select(t).where(where_any(t, links, owners.wanted)))
                result.returned_columns[coll.name] = [c["name"] for c in inspect(conn).get_columns(coll.name)]
                result.returned_collections.append(coll.name)
                records = []
                for row in cursor.mappings():
                    for request_id in sorted(owners.of(row, links)):
                        records.append({**{k: _plain(v) for k, v in row.items()}, REQUEST_ID_COLUMN: request_id})
                result.frames[coll.name] = pd.DataFrame.from_records(
                    records, columns=[*coll.field_names, REQUEST_ID_COLUMN]
                )
                result.source_counts[coll.name] = self._count(conn, coll, owners)
        log.info(
            "exported %s rows from %s collections of %s for %s subjects",
            sum(result.counts().values()),
            len(result.frames),
            self.system.key,
            len(subjects),
        )
        return result

    # -- erasure (planned by the right, applied here; see connectors/sql_erasure.py) ---------

    @remembering_email_keys
    def rows_of(
        self, subjects: list[ResolvedSubject], collections: list[Collection], extra: dict[str, list[str]] | None = None
    ) -> dict[str, list[dict]]:
        """The subjects' rows per collection as ``{"_request_id", <key>, <extra fields>}`` (no other values)."""
        from sqlalchemy import column, select, table

        owners = _Owners(subjects, self._wanted(subjects))
        found: dict[str, list[dict]] = {}
        with self.engine.connect() as conn:
            for coll in collections:
                links = self._link_columns(coll)
                wanted = (extra or {}).get(coll.name, [])
                names = sorted({coll.primary_key, *(c.name for c in links), *wanted})
                t = table(coll.name, *(column(n) for n in names))
                rows = []
                for row in conn.execute(select(t).where(where_any(t, links, owners.wanted))).mappings():
                    for request_id in sorted(owners.of(row, links)):
                        rows.append(
                            {
                                REQUEST_ID_COLUMN: request_id,
                                coll.primary_key: row[coll.primary_key],
                                **{n: row[n] for n in wanted},
                            }
                        )
                found[coll.name] = rows
        return found

    def rows_by_key(self, collection: str, keys: list, fields: list[str]) -> list[dict]:
        """The rows of ``collection`` with these primary keys: the key and ``fields`` (for the checks)."""
        from sqlalchemy import column, select, table

        from include.dsr.identity.matching import chunks

        coll = self.system.collection(collection)
        t = table(coll.name, *(column(n) for n in sorted({coll.primary_key, *fields})))
        found = []
        with self.engine.connect() as conn:
            for part in chunks(keys):
                found += [dict(r) for r in conn.execute(select(t).where(t.c[coll.primary_key].in_(part))).mappings()]
        return found

    def referencing(self, target: Collection, keys: list) -> dict:
        """Rows of any collection that point at ``keys`` of ``target`` (see ``sql_erasure.referencing_rows``)."""
        from include.dsr.connectors.sql_erasure import referencing_rows

        with self.engine.connect() as conn:
            return referencing_rows(conn, self.system, target, keys)

    def nullable_columns(self, collection: str) -> dict[str, bool]:
        """Column name -> nullable, as the database declares it (reflected, once per call)."""
        from sqlalchemy import inspect

        return {c["name"]: bool(c["nullable"]) for c in inspect(self.engine).get_columns(collection)}

    def apply_erasure(
        self, changes: list[RowChanges], secret: str, suppression: tuple[str, list[str]] | None = None
    ) -> dict[str, dict]:
        """Apply a planned change set and add suppression entries, in one transaction (idempotent;
        see ``sql_erasure``).

        :param suppression: ``(collection, keyed email hashes)`` to add where missing
        """
        from datetime import UTC, datetime

        from include.dsr.connectors.sql_erasure import add_suppression, apply_changes

        with self.engine.begin() as conn:
            counts = apply_changes(conn, self.system, changes, secret)
            if suppression:
                name, hashes = suppression
                now = datetime.now(UTC).replace(tzinfo=None)
                counts.setdefault(name, {"deleted": 0, "nulled": 0, "hashed": 0})["added"] = add_suppression(
                    conn, self.system.collection(name), hashes, now
                )
            return counts


class _Owners:
    """Which subjects of a batch a row belongs to, by the normalised identities in its link columns."""

    def __init__(self, subjects: list[ResolvedSubject], wanted: dict[str, set]) -> None:
        self.wanted = wanted
        self.index: dict[tuple[str, object], set[str]] = {}
        for s in subjects:
            for identity in IDENTITY_TYPES:
                for value in s.identity_values(identity):
                    self.index.setdefault((identity, value), set()).add(s.request_id)

    def of(self, row, links: list[LinkColumn]) -> set[str]:
        found: set[str] = set()
        for pair in matched_identities(row, links):
            found |= self.index.get(pair, set())
        return found


def _plain(value):
    """Exact, JSON-friendly values: money stays a decimal string, never a float."""
    return str(value) if isinstance(value, Decimal) else value
