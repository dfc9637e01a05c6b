"""The registries the product keeps beside the ledger, in the same database: facts, no payloads.

* **Subject keys**: keyed hashes (HMAC) of the identities each request resolved to (account
  ids, emails, phones). An erasure finds the earlier requests of the same person by them (their
  packages are copies of the person's data) without the ledger ever holding an identity.
* **Held data**: the rows an erasure kept under a legal obligation, with the fields kept, the
  basis and ``retain_until``; the retention run deletes them when that date has passed.

Plain SQLAlchemy Core on the ledger's engine; SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import and_, delete, insert, or_, select, update

from include.dsr.ledger.schema import dsr_held_data, dsr_subject_keys

if TYPE_CHECKING:
    from sqlalchemy import Engine

HELD, DELETED = "held", "deleted"


@dataclass(frozen=True)
class HeldRow:
    request_id: str
    system: str
    collection: str
    row_key: str
    fields_kept: list[str]
    basis: str
    retain_until: datetime
    status: str


class Registry:
    """:param engine: the ledger's engine (the registries live in the ledger database)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- subject keys ---------------------------------------------------------------------

    def record_subject_keys(self, request_id: str, keys: Iterable[tuple[str, str]]) -> int:
        """Store a request's keys (idempotent: a re-run replaces them); returns how many."""
        return self.record_many_subject_keys({request_id: keys})

    def record_many_subject_keys(self, keys_by_request: dict[str, Iterable[tuple[str, str]]]) -> int:
        """:meth:`record_subject_keys` for many requests in one transaction."""
        rows = [
            {"request_id": rid, "key_type": kind, "key_hash": digest}
            for rid, keys in keys_by_request.items()
            for kind, digest in sorted(set(keys))
        ]
        ids = sorted(keys_by_request)
        with self.engine.begin() as conn:
            for part in _chunks(ids, 500):
                conn.execute(delete(dsr_subject_keys).where(dsr_subject_keys.c.request_id.in_(part)))
            for part in _chunks(rows, 1000):
                conn.execute(insert(dsr_subject_keys), part)
        return len(rows)

    def requests_sharing_many(self, keys_by_request: dict[str, Iterable[tuple[str, str]]]) -> dict[str, list[str]]:
        """Per request, the other requests sharing one of its keys (one query per thousand keys)."""
        owners: dict[str, set[str]] = {}
        for rid, keys in keys_by_request.items():
            for _, digest in keys:
                owners.setdefault(digest, set()).add(rid)
        found: dict[str, set[str]] = {rid: set() for rid in keys_by_request}
        with self.engine.connect() as conn:
            for part in _chunks(sorted(owners), 1000):
                query = select(dsr_subject_keys.c.key_hash, dsr_subject_keys.c.request_id).where(
                    dsr_subject_keys.c.key_hash.in_(part)
                )
                for digest, other in conn.execute(query):
                    for rid in owners[digest]:
                        if other != rid:
                            found[rid].add(other)
        return {rid: sorted(others) for rid, others in found.items()}

    def requests_sharing_keys(self, keys: Iterable[tuple[str, str]], exclude: str | None = None) -> list[str]:
        """Other requests any of whose keys is one of ``keys`` (the same person, earlier)."""
        digests = sorted({digest for _, digest in keys})
        if not digests:
            return []
        query = select(dsr_subject_keys.c.request_id).where(dsr_subject_keys.c.key_hash.in_(digests)).distinct()
        with self.engine.connect() as conn:
            found = {row[0] for row in conn.execute(query)}
        return sorted(found - {exclude})

    # -- data held under a legal obligation -----------------------------------------------

    def record_held(self, rows: Iterable[HeldRow], now: datetime | None = None) -> int:
        """Register held rows (idempotent per request, system, collection and row)."""
        now = now or datetime.now(UTC)
        values = [
            {
                "request_id": r.request_id,
                "system": r.system,
                "collection": r.collection,
                "row_key": r.row_key,
                "fields_kept": json.dumps(sorted(r.fields_kept)),
                "basis": r.basis,
                "retain_until": r.retain_until,
                "status": HELD,
                "created_at": now,
            }
            for r in rows
        ]
        if not values:
            return 0
        t = dsr_held_data.c
        with self.engine.begin() as conn:
            for part in _chunks(values, 500):
                keys = [
                    and_(
                        t.request_id == v["request_id"],
                        t.system == v["system"],
                        t.collection == v["collection"],
                        t.row_key == v["row_key"],
                    )
                    for v in part
                ]
                conn.execute(delete(dsr_held_data).where(or_(*keys)))
                conn.execute(insert(dsr_held_data), part)
        return len(values)

    def held(self, request_id: str | None = None, due_by: datetime | None = None) -> list[HeldRow]:
        """Rows still held; of one request, or those whose ``retain_until`` is at or before ``due_by``."""
        t = dsr_held_data.c
        query = select(dsr_held_data).where(t.status == HELD).order_by(t.retain_until, t.collection, t.row_key)
        if request_id is not None:
            query = query.where(t.request_id == request_id)
        if due_by is not None:
            query = query.where(t.retain_until <= due_by)
        with self.engine.connect() as conn:
            return [
                HeldRow(
                    r.request_id,
                    r.system,
                    r.collection,
                    r.row_key,
                    json.loads(r.fields_kept),
                    r.basis,
                    r.retain_until,
                    r.status,
                )
                for r in conn.execute(query)
            ]

    def mark_deleted(self, rows: Iterable[HeldRow], now: datetime | None = None) -> int:
        """The retention run deleted these held rows."""
        now = now or datetime.now(UTC)
        t = dsr_held_data.c
        count = 0
        with self.engine.begin() as conn:
            for row in rows:
                conn.execute(
                    update(dsr_held_data)
                    .where(
                        t.request_id == row.request_id,
                        t.system == row.system,
                        t.collection == row.collection,
                        t.row_key == row.row_key,
                    )
                    .values(status=DELETED, closed_at=now)
                )
                count += 1
        return count


def _chunks(values: list, size: int):
    for i in range(0, len(values), size):
        yield values[i : i + size]
