"""Finding the rows of a set of identities: an indexed SQL superset, then the exact check in Python.

A collection's *link columns* are its identity fields (email, phone, account id, email hash)
and the fields that reference the account collection's id. For each, :class:`LinkColumn`
builds an index-friendly ``IN`` clause over the lookup key of
:mod:`include.dsr.core.sql_keys` and, for a row the database returned, says exactly which
identity value the stored value is (:meth:`LinkColumn.identity_of`), with the rules of
:mod:`include.dsr.core.identities`. Connectors, the resolver and the checks all decide
"this row is the subject's" here, so the rule exists once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.dsr.core.identities import (
    email_key_candidates,
    normalize_email,
    normalize_phone,
    phone_digit_candidates,
)

if TYPE_CHECKING:
    from sqlalchemy.sql import ColumnElement, TableClause

    from include.dsr.core.data_map import Collection

log = logging.getLogger(__name__)

IN_CHUNK = 500  # values per IN (...) list: far below SQLite's variable limit
IDENTITY_TYPES = ("email", "phone", "account_id", "email_hash")


def chunks(values: Iterable[Any], size: int = IN_CHUNK) -> Iterator[list[Any]]:
    ordered = sorted(values, key=str)
    for i in range(0, len(ordered), size):
        yield ordered[i : i + size]


@dataclass(frozen=True)
class LinkColumn:
    """A column through which a row belongs to a subject.

    :param name: the column  :param identity: ``email``, ``phone``, ``account_id`` or ``email_hash``
    :param phone_format: for phones, ``e164`` or ``free_text``  :param phone_region: region of national numbers
    """

    name: str
    identity: str
    phone_format: str = "e164"
    phone_region: str | None = None

    def clauses(self, table: TableClause, wanted: set[Any]) -> list[ColumnElement[bool]]:
        """Index-friendly conditions selecting (at least) the rows holding one of ``wanted``."""
        from sqlalchemy import true

        from include.dsr.core.sql_keys import email_key, phone_digits_key

        column = table.c[self.name]
        if not wanted:
            return []
        if self.identity == "email":
            keys: set[str] = set()
            for email in wanted:
                candidates = email_key_candidates(email)
                if candidates is None:  # too many case forms to list: scan, the exact check decides
                    log.warning("an address has too many case forms for an indexed lookup on %s", self.name)
                    return [true()]
                keys |= candidates
            return [email_key(column).in_(chunk) for chunk in chunks(keys)]
        if self.identity == "phone" and self.phone_format == "free_text":
            digits = set().union(*(phone_digit_candidates(p, self.phone_region) for p in wanted))
            return [phone_digits_key(column).in_(chunk) for chunk in chunks(digits)]
        return [column.in_(chunk) for chunk in chunks(wanted)]

    def identity_of(self, stored: Any) -> Any:
        """The normalised identity a stored value is, comparable with a subject's; None if none."""
        if stored is None:
            return None
        if self.identity == "email":
            return normalize_email(str(stored))
        if self.identity == "phone":
            return normalize_phone(str(stored), self.phone_region)
        if self.identity == "account_id":
            return _as_int(stored)
        return str(stored)


def _as_int(value: Any) -> int | None:
    """An id read back as 12, 12.0 (a nullable integer column in pandas) or "12" is the id 12."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number != number or not number.is_integer():  # NaN or a fraction is no id
        return None
    return int(number)


def link_columns(coll: Collection, account_collection: str = "accounts") -> list[LinkColumn]:
    """The columns through which a row of ``coll`` belongs to a subject: its identity fields,
    and the fields that reference the account collection's id."""
    columns = [
        LinkColumn(f.name, f.identity, f.phone_format or "e164", f.phone_region) for f in coll.fields if f.identity
    ]
    columns += [
        LinkColumn(f.name, "account_id")
        for f in coll.fields
        if not f.identity and any(r.collection == account_collection for r in f.references)
    ]
    return columns


def where_any(table: TableClause, columns: list[LinkColumn], wanted: dict[str, set[Any]]) -> ColumnElement[bool]:
    """OR of every column's clauses for the identity values in ``wanted`` (type -> values)."""
    from sqlalchemy import false, or_

    clauses = [clause for column in columns for clause in column.clauses(table, wanted.get(column.identity, set()))]
    return or_(*clauses) if clauses else false()


def matched_identities(row: Any, columns: list[LinkColumn]) -> set[tuple[str, Any]]:
    """``(identity type, normalised value)`` pairs the row holds in its link columns."""
    found = set()
    for column in columns:
        value = column.identity_of(row[column.name])
        if value is not None:
            found.add((column.identity, value))
    return found
