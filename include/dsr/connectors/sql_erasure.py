"""Erasure on a SQL platform DB: find the rows and what references them, then apply a change set.

The connector does not decide what to erase: the erasure right plans it (per row and field,
with legal holds and references, :mod:`include.dsr.rights.erasure_plan`) and hands over
:class:`RowChanges`, a neutral list of rows to delete and fields to empty or replace by their
keyed hash. :func:`apply_changes` carries it out in foreign-key order: every field update
first (a kept order loses its link to the address before the address goes), then deletes,
children before parents. It is idempotent: deleting a deleted row affects nothing, a nulled
field stays null, a value already replaced by its hash (``hash:<64 hex>``) is not hashed again;
so a failed erasure is resumed by running it again. One transaction per call; a caller with a
very large subject calls it per chunk, each chunk committing on its own.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.dsr.core.identities import normalize_email, normalize_phone
from include.dsr.core.pii import keyed_hash
from include.dsr.identity.matching import chunks

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from include.dsr.core.data_map import Collection, System

log = logging.getLogger(__name__)

HASH_PREFIX = "hash:"


@dataclass
class RowChanges:
    """What to do to one collection's rows: delete some, empty or hash fields of others."""

    collection: str
    key: str
    delete: list[Any] = field(default_factory=list)
    null: dict[str, list[Any]] = field(default_factory=dict)
    hash: dict[str, list[Any]] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "collection": self.collection,
            "key": self.key,
            "delete": self.delete,
            "null": self.null,
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, raw: dict) -> RowChanges:
        return cls(raw["collection"], raw["key"], list(raw["delete"]), dict(raw["null"]), dict(raw["hash"]))


def hashed(value: Any, identity: str | None, secret: str) -> str:
    """The pseudonym of a value: ``hash:`` + HMAC of its normalised form (emails and phones as compared)."""
    text = str(value)
    if identity == "email":
        text = normalize_email(text) or text
    elif identity == "phone":
        text = normalize_phone(text) or text
    return HASH_PREFIX + keyed_hash(text, secret)


def is_hashed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(HASH_PREFIX) and len(value) == len(HASH_PREFIX) + 64


def deletion_order(system: System) -> list[str]:
    """Collections children first: a collection comes before every collection it references."""
    refs = {
        c.name: {r.collection for f in c.fields for r in f.references if r.collection != c.name}
        for c in system.collections
    }
    ordered: list[str] = []
    seen: set[str] = set()

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        if name in seen or name in path:
            return
        for child in sorted(n for n, parents in refs.items() if name in parents):
            visit(child, (*path, name))
        seen.add(name)
        ordered.append(name)

    for name in sorted(refs):
        visit(name)
    return ordered


def referencing_rows(conn: Connection, system: System, target: Collection, keys: list[Any]) -> dict:
    """Rows of any collection that point at ``keys`` of ``target``:
    ``{(collection, field): {(its key, target key), ...}}``."""
    from sqlalchemy import column, select, table

    found: dict[tuple[str, str], set[tuple[Any, Any]]] = defaultdict(set)
    if not keys:
        return found
    for coll in system.collections:
        for f in coll.fields:
            if not any(r.collection == target.name and r.field == target.primary_key for r in f.references):
                continue
            t = table(coll.name, column(coll.primary_key), column(f.name))
            for part in chunks(keys):
                for row in conn.execute(select(t.c[coll.primary_key], t.c[f.name]).where(t.c[f.name].in_(part))):
                    found[(coll.name, f.name)].add((row[0], row[1]))
    return found


def apply_changes(conn: Connection, system: System, changes: list[RowChanges], secret: str) -> dict[str, dict]:
    """Apply ``changes`` on an open transaction; returns per collection the rows deleted and fields changed."""
    from sqlalchemy import bindparam, column, delete, select, table, update

    by_name = {c.collection: c for c in changes}
    counts: dict[str, dict] = {c.collection: {"deleted": 0, "nulled": 0, "hashed": 0} for c in changes}
    for change in changes:  # updates first: kept rows let go of the rows about to be deleted
        coll = system.collection(change.collection)
        t = table(coll.name, *(column(n) for n in {coll.primary_key, *change.null, *change.hash}))
        pk = t.c[coll.primary_key]
        for name, keys in change.null.items():
            for part in chunks(keys):
                result = conn.execute(update(t).where(pk.in_(part), t.c[name].is_not(None)).values({name: None}))
                counts[change.collection]["nulled"] += result.rowcount
        for name, keys in change.hash.items():
            identity = coll.field(name).identity
            for part in chunks(keys):
                rows = conn.execute(select(pk, t.c[name]).where(pk.in_(part))).all()
                todo = [
                    {"_k": key, "_v": hashed(value, identity, secret)}
                    for key, value in rows
                    if value is not None and not is_hashed(value)
                ]
                if todo:
                    statement = update(t).where(pk == bindparam("_k")).values({name: bindparam("_v")})
                    conn.execute(statement, todo)
                counts[change.collection]["hashed"] += len(todo)
    for name in deletion_order(system):  # then deletes, children before parents
        change = by_name.get(name)
        if change is None or not change.delete:
            continue
        coll = system.collection(name)
        t = table(coll.name, column(coll.primary_key))
        for part in chunks(change.delete):
            counts[name]["deleted"] += conn.execute(delete(t).where(t.c[coll.primary_key].in_(part))).rowcount
    log.info(
        "erasure applied on %s: %s rows deleted, %s fields emptied, %s hashed",
        system.key,
        sum(c["deleted"] for c in counts.values()),
        sum(c["nulled"] for c in counts.values()),
        sum(c["hashed"] for c in counts.values()),
    )
    return counts


def add_suppression(
    conn: Connection, collection: Collection, email_hashes: list[str], now: Any, reason: str = "erasure"
) -> int:
    """Add the keyed hashes missing from the suppression collection; returns how many were added."""
    from sqlalchemy import column, insert, select, table

    if not email_hashes:
        return 0
    hash_field = next(f.name for f in collection.fields if f.identity == "email_hash")
    t = table(collection.name, column(hash_field), column("reason"), column("added_at"))
    present: set[str] = set()
    for part in chunks(email_hashes):
        present |= {r[0] for r in conn.execute(select(t.c[hash_field]).where(t.c[hash_field].in_(part)))}
    rows = [{hash_field: h, "reason": reason, "added_at": now} for h in sorted(set(email_hashes) - present)]
    if rows:
        conn.execute(insert(t), rows)
    return len(rows)
