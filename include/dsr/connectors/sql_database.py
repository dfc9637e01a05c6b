"""Connector for the platform database (SQLite in the demo, PostgreSQL in production).

One indexed, set-based query per collection and batch: a row belongs to a subject when
one of its identity fields holds one of the subject's identities or when it references one
of the subject's accounts. The query selects a superset on the indexed lookup keys and every
row is then checked exactly (:mod:`include.dsr.identity.matching`), so SQLite and PostgreSQL
under any collation return the same rows. A second, separate query counts the subjects' rows
for the checks. Tables are addressed through the data map's field lists, so no reflection
happens at run time and unmapped columns are never read.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

from include.dsr.connectors.base import REQUEST_ID_COLUMN, BaseConnector, ExportResult
from include.dsr.identity.matching import IDENTITY_TYPES, LinkColumn, link_columns, matched_identities, where_any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from include.dsr.core.data_map import Collection, System
    from include.dsr.identity.resolver import ResolvedSubject

log = logging.getLogger(__name__)


class SqlDatabaseConnector(BaseConnector):
    """:param engine: optional engine (tests); by default built from the system's connection."""

    channel: ClassVar[str] = "database"
    capabilities: ClassVar[frozenset[str]] = frozenset({"test_connection", "locate", "export"})
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

    def locate(self, subjects: list[ResolvedSubject]) -> dict[str, int]:
        owners = _Owners(subjects, self._wanted(subjects))
        with self.engine.connect() as conn:
            return {
                coll.name: self._count(conn, coll, owners)
                for coll in self.system.collections
                if coll.personal and self._link_columns(coll)
            }

    def export(self, subjects: list[ResolvedSubject], collections: list[Collection] | None = None) -> ExportResult:
        import pandas as pd
        from sqlalchemy import column, select, table

        owners = _Owners(subjects, self._wanted(subjects))
        result = ExportResult(self.system.key)
        with self.engine.connect() as conn:
            for coll in collections or [c for c in self.system.collections if c.personal]:
                links = self._link_columns(coll)
                t = table(coll.name, *(column(f) for f in coll.field_names))
                cursor = conn.execute(select(t).where(where_any(t, links, owners.wanted)))
                result.returned_columns[coll.name] = list(cursor.keys())
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
