"""The subject's rows of a platform DB collection, found through the account they belong to.

The rights that change data in place (rectification, objection, consent withdrawal) touch only
rows tied to the subject's accounts: the ``accounts`` row itself, or rows whose field references
it. Plain SQLAlchemy Core on the platform engine, SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import column, select, table, update

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from include.dsr.core.data_map import Collection

ACCOUNTS = "accounts"


def account_link(coll: Collection, required: bool = True) -> str | None:
    """The field of ``coll`` holding the account id (the primary key of ``accounts`` itself).

    :param required: raise ``KeyError`` for a collection tied to no account (else None)
    """
    if coll.name == ACCOUNTS:
        return coll.primary_key
    for f in coll.fields:
        if any(r.collection == ACCOUNTS for r in f.references):
            return f.name
    if required:
        raise KeyError(f"collection {coll.name} is not tied to an account")
    return None


def _link(coll: Collection) -> str:
    link = account_link(coll)
    assert link is not None  # required=True raised otherwise
    return link


def rows_of(conn: Connection, coll: Collection, account_ids: set[int]) -> dict[int, dict[str, Any]]:
    """The accounts' rows of ``coll``, keyed by primary key."""
    t = table(coll.name, *(column(n) for n in coll.field_names))
    query = select(t).where(t.c[_link(coll)].in_(sorted(account_ids)))
    return {int(r[coll.primary_key]): dict(r) for r in conn.execute(query).mappings()}


def set_fields(conn: Connection, coll: Collection, account_ids: set[int], values: dict[str, Any]) -> int:
    """Set ``values`` on every row of the accounts in ``coll`` (in the caller's transaction);
    returns the rows that changed."""
    if not account_ids:
        return 0
    t = table(coll.name, *(column(n) for n in {_link(coll), *values}))
    differs = [t.c[name].is_distinct_from(value) for name, value in values.items()]
    from sqlalchemy import or_

    query = update(t).where(t.c[_link(coll)].in_(sorted(account_ids)), or_(*differs)).values(**values)
    return conn.execute(query).rowcount or 0
