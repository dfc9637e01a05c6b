"""Resolve data subjects across the identity graph of the data map, a batch at a time.

Exact matching rules (DESIGN.md):

* emails match case-insensitively after trimming; a different email never matches;
* an account is linked by its email, its id, or a phone that belongs to exactly one account;
* a phone shared by several accounts (a company line) links nobody: rows keyed only by
  that phone are not gathered for anyone, and the phone is not sent to partners;
* a linked account contributes its own email and (unshared) phone to the subject;
* recipients come from the ``shared_with`` declarations (orders -> manufacturing partner,
  payment methods -> processor, payout accounts -> card program), for linked accounts only.

Names, companies and addresses never link anything.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from include.dsr.core.pii import keyed_hash, normalize_email, normalize_phone

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from include.dsr.core.data_map import DataMap, System

IN_CHUNK = 500  # values per IN (...) list: far below SQLite's variable limit


@dataclass(frozen=True)
class SubjectQuery:
    """One subject of a batch as the request gave it (normalised identities)."""

    request_id: str
    email: str | None = None
    phone: str | None = None
    account_id: int | None = None


@dataclass
class ResolvedSubject:
    """Everything that identifies one subject. Holds personal data: stage it, never log it."""

    request_id: str
    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    account_ids: set[int] = field(default_factory=set)
    email_hashes: set[str] = field(default_factory=set)
    ambiguous_phones: set[str] = field(default_factory=set)
    recipients: set[str] = field(default_factory=set)

    def identity_values(self, identity: str) -> set[Any]:
        values: dict[str, set[Any]] = {
            "email": self.emails,
            "phone": self.phones,
            "account_id": self.account_ids,
            "email_hash": self.email_hashes,
        }
        return values[identity]

    @property
    def found(self) -> bool:
        return bool(self.emails or self.phones or self.account_ids)

    def to_json(self) -> dict:
        return {k: sorted(v) if isinstance(v, set) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, raw: dict) -> ResolvedSubject:
        return cls(request_id=raw["request_id"], **{k: set(v) for k, v in raw.items() if k != "request_id"})

    def summary(self) -> dict:
        """Counts only: safe for logs, XCom and the ledger."""
        return {
            "accounts": len(self.account_ids),
            "emails": len(self.emails),
            "phones": len(self.phones),
            "ambiguous_phones": len(self.ambiguous_phones),
            "recipients": sorted(self.recipients),
        }


def link_keys(coll, account_collection: str = "accounts") -> list[tuple[str, str]]:
    """(field, identity type) pairs through which a row of ``coll`` belongs to a subject:
    its identity fields, and fields referencing the account collection's id."""
    keys = [(f.name, f.identity) for f in coll.fields if f.identity]
    keys += [
        (f.name, "account_id")
        for f in coll.fields
        if not f.identity and any(r.collection == account_collection for r in f.references)
    ]
    return keys


def _chunks(values, size: int = IN_CHUNK):
    values = list(values)
    for i in range(0, len(values), size):
        yield values[i : i + size]


class IdentityResolver:
    """Set-based resolution of a batch of subjects against the platform DB.

    :param engine: SQLAlchemy engine of the platform DB (``fabconnect_app``)
    :param data_map: the validated data map
    :param hash_secret: secret of keyed email hashes (suppression list)
    """

    # Override to resolve against another system's account table.
    system_key = "fabconnect_app"
    account_collection = "accounts"

    def __init__(self, engine: Engine, data_map: DataMap, hash_secret: str) -> None:
        self.engine = engine
        self.system: System = data_map.system(self.system_key)
        self.hash_secret = hash_secret
        accounts = self.system.collection(self.account_collection)
        ids = accounts.identities
        self.id_col, self.email_col, self.phone_col = ids["account_id"], ids["email"], ids["phone"]

    def resolve(self, batch: list[SubjectQuery]) -> list[ResolvedSubject]:
        resolved = {q.request_id: ResolvedSubject(q.request_id) for q in batch}
        with self.engine.connect() as conn:
            request_phones = {q.phone for q in batch if q.phone}
            by_email = self._accounts(conn, self.email_col, {q.email for q in batch if q.email}, lower=True)
            by_id = self._accounts(conn, self.id_col, {q.account_id for q in batch if q.account_id is not None})
            all_phones = request_phones | {a["phone"] for a in [*by_email, *by_id] if a["phone"]}
            shared = self._shared_phones(conn, all_phones)
            by_phone = self._accounts(conn, self.phone_col, request_phones - shared)
            for q in batch:
                subject = resolved[q.request_id]
                linked = (
                    [a for a in by_email if a["email"] == q.email]
                    + [a for a in by_id if a["id"] == q.account_id]
                    + [a for a in by_phone if a["phone"] == q.phone]
                )
                subject.emails |= {q.email} if q.email else set()
                if q.phone:
                    (subject.ambiguous_phones if q.phone in shared else subject.phones).add(q.phone)
                for account in linked:
                    subject.account_ids.add(account["id"])
                    subject.emails.add(account["email"])
                    if account["phone"]:
                        (subject.ambiguous_phones if account["phone"] in shared else subject.phones).add(
                            account["phone"]
                        )
                subject.email_hashes = {keyed_hash(e, self.hash_secret) for e in subject.emails}
            self._recipients(conn, list(resolved.values()))
        return [resolved[q.request_id] for q in batch]

    def _accounts(self, conn: Connection, column: str, values: set, lower: bool = False) -> list[dict]:
        from sqlalchemy import column as col
        from sqlalchemy import func, select, table

        if not values:
            return []
        t = table(self.account_collection, col(self.id_col), col(self.email_col), col(self.phone_col))
        key = func.lower(func.trim(t.c[column])) if lower else t.c[column]
        found = []
        for chunk in _chunks(values):
            for row in conn.execute(
                select(t.c[self.id_col], t.c[self.email_col], t.c[self.phone_col]).where(key.in_(chunk))
            ):
                found.append({"id": row[0], "email": normalize_email(row[1]), "phone": normalize_phone(row[2])})
        return found

    def _shared_phones(self, conn: Connection, phones: set[str]) -> set[str]:
        from sqlalchemy import column as col
        from sqlalchemy import func, select, table

        t = table(self.account_collection, col(self.id_col), col(self.phone_col))
        shared = set()
        for chunk in _chunks(phones):
            query = (
                select(t.c[self.phone_col])
                .where(t.c[self.phone_col].in_(chunk))
                .group_by(t.c[self.phone_col])
                .having(func.count() > 1)
            )
            shared |= {row[0] for row in conn.execute(query)}
        return shared

    def _recipients(self, conn: Connection, subjects: list[ResolvedSubject]) -> None:
        """Partner systems that received rows of each subject's accounts (``shared_with``)."""
        from sqlalchemy import column as col
        from sqlalchemy import select, table

        owner = {aid: s for s in subjects for aid in s.account_ids}
        if not owner:
            return
        for coll in self.system.collections:
            if not coll.shared_with:
                continue
            link = next(
                f.name for f in coll.fields if any(r.collection == self.account_collection for r in f.references)
            )
            t = table(coll.name, col(link), col(coll.shared_with.field))
            values: dict[object, set[int]] = defaultdict(set)
            for chunk in _chunks(owner):
                for account_id, value in conn.execute(
                    select(t.c[link], t.c[coll.shared_with.field]).where(t.c[link].in_(chunk)).distinct()
                ):
                    values[value].add(account_id)
            names = (
                self._lookup(conn, coll.shared_with.lookup, set(values))
                if coll.shared_with.lookup
                else {v: v for v in values}
            )
            for value, account_ids in values.items():
                for account_id in account_ids:
                    owner[account_id].recipients.add(str(names[value]))

    def _lookup(self, conn: Connection, lookup: str, values: set) -> dict:
        from sqlalchemy import column as col
        from sqlalchemy import select, table

        name, _, target = lookup.partition(".")
        key = self.system.collection(name).primary_key
        t = table(name, col(key), col(target))
        return {row[0]: row[1] for row in conn.execute(select(t.c[key], t.c[target]).where(t.c[key].in_(list(values))))}


def dumps(subjects: list[ResolvedSubject]) -> str:
    return json.dumps([s.to_json() for s in subjects])


def loads(text: str) -> list[ResolvedSubject]:
    return [ResolvedSubject.from_json(raw) for raw in json.loads(text)]
