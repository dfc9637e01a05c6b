"""Connector for the platform database (SQLite in the demo, PostgreSQL in production).

One indexed, set-based query per collection and batch: a row belongs to a subject when
one of its identity fields holds one of the subject's identities (emails compared as
``lower(trim(col))``, which is what the expression indexes cover) or when it references one
of the subject's accounts. Tables are addressed through the data map's field lists, so
no reflection happens at run time and unmapped columns are never read.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

from include.dsr.connectors.base import REQUEST_ID_COLUMN, BaseConnector, ExportResult
from include.dsr.identity.resolver import IN_CHUNK, link_keys

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

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

    def _keys(self, coll: Collection) -> list[tuple[str, str]]:
        return link_keys(coll, self.account_collection)

    def _where(self, table, keys: list[tuple[str, str]], values: dict[str, set]):
        from sqlalchemy import false, func, or_

        clauses = []
        for name, identity in keys:
            wanted = sorted(values[identity], key=str)
            column = func.lower(func.trim(table.c[name])) if identity == "email" else table.c[name]
            clauses += [column.in_(wanted[i : i + IN_CHUNK]) for i in range(0, len(wanted), IN_CHUNK)]
        return or_(*clauses) if clauses else false()

    @staticmethod
    def _values(subjects: list[ResolvedSubject]) -> dict[str, set]:
        merged: dict[str, set] = {"email": set(), "phone": set(), "account_id": set(), "email_hash": set()}
        for s in subjects:
            for identity, bucket in merged.items():
                bucket |= s.identity_values(identity)
        return merged

    def locate(self, subjects: list[ResolvedSubject]) -> dict[str, int]:
        from sqlalchemy import column, func, select, table

        values, counts = self._values(subjects), {}
        with self.engine.connect() as conn:
            for coll in self.system.collections:
                keys = self._keys(coll)
                if not coll.personal or not keys:
                    continue
                t = table(coll.name, *(column(name) for name, _ in keys))
                counts[coll.name] = conn.execute(
                    select(func.count()).select_from(t).where(self._where(t, keys, values))
                ).scalar_one()
        return counts

    def export(self, subjects: list[ResolvedSubject], collections: list[Collection] | None = None) -> ExportResult:
        import pandas as pd
        from sqlalchemy import column, select, table

        values = self._values(subjects)
        owners = _owner_index(subjects)
        result = ExportResult(self.system.key)
        with self.engine.connect() as conn:
            for coll in collections or [c for c in self.system.collections if c.personal]:
                keys = self._keys(coll)
                t = table(coll.name, *(column(f) for f in coll.field_names))
                rows = conn.execute(select(t).where(self._where(t, keys, values))).mappings().all()
                records = []
                for row in rows:
                    for request_id in sorted(_owners_of(row, keys, owners)):
                        records.append({**{k: _plain(v) for k, v in row.items()}, REQUEST_ID_COLUMN: request_id})
                result.frames[coll.name] = pd.DataFrame.from_records(
                    records, columns=[*coll.field_names, REQUEST_ID_COLUMN]
                )
        log.info(
            "exported %s rows from %s collections of %s for %s subjects",
            sum(result.counts().values()),
            len(result.frames),
            self.system.key,
            len(subjects),
        )
        return result


def _owner_index(subjects: list[ResolvedSubject]) -> dict[tuple[str, object], set[str]]:
    index: dict[tuple[str, object], set[str]] = {}
    for s in subjects:
        for identity in ("email", "phone", "account_id", "email_hash"):
            for value in s.identity_values(identity):
                index.setdefault((identity, value), set()).add(s.request_id)
    return index


def _owners_of(row, keys: list[tuple[str, str]], owners: dict) -> set[str]:
    found: set[str] = set()
    for name, identity in keys:
        value = row[name]
        if value is None:
            continue
        if identity == "email":
            value = value.strip().lower()
        found |= owners.get((identity, value), set())
    return found


def _plain(value):
    """Exact, JSON-friendly values: money stays a decimal string, never a float."""
    return str(value) if isinstance(value, Decimal) else value
