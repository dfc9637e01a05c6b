"""Identities a rectification replaced, so requests already open keep finding their subject.

When a subject corrects an identity (the account's email or phone), the platform DB holds only
the new value, and a later request finds the subject under it. A request received *before* the
correction may still name the old value: the alias row (a keyed hash of the old value, the
account, when it was replaced) lets the resolver link it to the account. A request received
after the correction is not helped: the old value is nobody's any more.

The table lives in the platform DB beside the identity graph it completes; rows hold no values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, MetaData, String, Table, inspect, select

from include.dsr.core.pii import keyed_hash

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

metadata = MetaData()
aliases = Table(
    "dsr_identity_aliases",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_type", String(16), nullable=False),  # email | phone
    Column("key_hash", String(64), nullable=False),
    Column("account_id", BigInteger, nullable=False),
    Column("replaced_at", DateTime, nullable=False),  # UTC wall time
    Column("request_id", String(128), nullable=False),  # the rectification that replaced it
    Index("ix_dsr_identity_aliases_key_hash", "key_hash"),
)


def alias_hash(key_type: str, value: str, secret: str) -> str:
    return keyed_hash(f"alias:{key_type}:{value}", secret)


def ensure_schema(engine: Engine) -> None:
    metadata.create_all(engine, checkfirst=True)


def record(
    conn: Connection,
    request_id: str,
    account_id: int,
    key_type: str,
    old_value: str,
    secret: str,
    replaced_at: datetime | None = None,
) -> None:
    """Remember that ``old_value`` was the account's ``key_type`` until now (idempotent per request)."""
    digest = alias_hash(key_type, old_value, secret)
    exists = conn.execute(
        select(aliases.c.id).where(aliases.c.key_hash == digest, aliases.c.request_id == request_id)
    ).first()
    if exists is None:
        at = (replaced_at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
        conn.execute(
            aliases.insert().values(
                key_type=key_type, key_hash=digest, account_id=account_id, replaced_at=at, request_id=request_id
            )
        )


def lookup(
    conn: Connection, wanted: dict[str, set], secret: str
) -> dict[tuple[str, object], list[tuple[int, datetime]]]:
    """``(identity type, value)`` -> ``(account id, replaced at (aware UTC))`` of every alias of the
    wanted emails and phones; empty where the table does not exist yet (no correction ever made)."""
    if not inspect(conn).has_table(aliases.name):
        return {}
    by_hash = {
        alias_hash(kind, value, secret): (kind, value)
        for kind in ("email", "phone")
        for value in wanted.get(kind, set())
    }
    found: dict[tuple[str, object], list[tuple[int, datetime]]] = defaultdict(list)
    for part in _chunks(sorted(by_hash), 1000):
        query = select(aliases.c.key_hash, aliases.c.account_id, aliases.c.replaced_at).where(
            aliases.c.key_hash.in_(part)
        )
        for digest, account_id, replaced_at in conn.execute(query):
            found[by_hash[digest]].append((int(account_id), replaced_at.replace(tzinfo=UTC)))
    return dict(found)


def _chunks(values: list, size: int) -> Iterable[list]:
    for i in range(0, len(values), size):
        yield values[i : i + size]
