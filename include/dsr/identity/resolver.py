"""Resolve data subjects across the identity graph of the data map, a batch at a time.

Exact matching rules (DESIGN.md; the comparisons are :mod:`include.dsr.identity.matching`'s):

* emails match after trimming any whitespace, NFC and lower-casing; phones as E.164; a
  different email or number never matches;
* **only a verified identity links accounts.** A request's verification covers some identity
  types (:data:`include.dsr.core.request.VERIFICATION_COVERS`); the first verified one the
  request gives (account id, then email, then phone) is the *anchor* and links the accounts
  it belongs to;
* every other identity of the request must belong to those same accounts, or to no account.
  One that belongs to another account is a **conflict** (a shared company line conflicts when
  none of its holders is the anchor's account): nothing is merged, the subject carries the
  conflicting identity types (never values) and the caller stops before gathering;
* a method that proves an identity only as the anchor account's own (a logged-in session: its
  login email) leaves any other value of that type unverified;
* identities the verification does not cover are checked for conflicts but never used to
  find data (``ignored``);
* a phone shared by several accounts (a company line) links nobody: rows keyed only by that
  phone are not gathered for anyone, and the phone is not sent to partners;
* a linked account contributes its own email and (unshared) phone to the subject;
* an email or phone a rectification replaced still links its account for requests received
  before the correction (:mod:`include.dsr.identity.aliases`), never for later ones;
* recipients come from the ``shared_with`` declarations (orders -> manufacturing partner,
  payment methods -> processor, payout accounts -> card program), for linked accounts only.

Names, companies and addresses never link anything.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from include.dsr.core.identities import remembering_email_keys
from include.dsr.core.pii import keyed_hash
from include.dsr.identity.matching import LinkColumn, chunks, where_any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from include.dsr.core.data_map import DataMap, System

#: Order in which a request's verified identities are taken as the anchor.
ANCHOR_ORDER = ("account_id", "email", "phone")
ALL_TYPES = frozenset(ANCHOR_ORDER)


@dataclass(frozen=True)
class SubjectQuery:
    """One subject of a batch as the request gave it (normalised identities).

    :param verified: identity types the request's verification covers (all, when ops confirm).
    :param bound_to_anchor: verified types the verification proves only as the anchor account's
        own (a logged-in session proves its account's login email, not any email typed in).
    """

    request_id: str
    email: str | None = None
    phone: str | None = None
    account_id: int | None = None
    verified: frozenset[str] = ALL_TYPES
    bound_to_anchor: frozenset[str] = frozenset()
    #: when the request arrived: identities replaced by a later rectification still link then
    received_at: datetime | None = None

    def given(self) -> dict[str, Any]:
        """identity type -> value, for the identities the request gives."""
        values = {"account_id": self.account_id, "email": self.email, "phone": self.phone}
        return {kind: value for kind, value in values.items() if value is not None}

    def anchor(self) -> str | None:
        """The verified identity type that links accounts, or None when none is given."""
        given = self.given()
        return next((kind for kind in ANCHOR_ORDER if kind in given and kind in self.verified), None)

    def only_anchor(self) -> SubjectQuery:
        """This query with the anchor identity alone (ops chose "verified identity only")."""
        anchor = self.anchor()
        kept = {kind: value for kind, value in self.given().items() if kind == anchor}
        return SubjectQuery(self.request_id, verified=frozenset(kept), received_at=self.received_at, **kept)


@dataclass
class ResolvedSubject:
    """Everything that identifies one subject. Holds personal data: stage it, never log it.

    ``conflicts`` names identity types (never values) of the request that belong to another
    account than the anchor's; ``ignored`` the types the verification does not cover.
    """

    request_id: str
    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    account_ids: set[int] = field(default_factory=set)
    email_hashes: set[str] = field(default_factory=set)
    ambiguous_phones: set[str] = field(default_factory=set)
    recipients: set[str] = field(default_factory=set)
    conflicts: set[str] = field(default_factory=set)
    ignored: set[str] = field(default_factory=set)
    #: names on the linked accounts: never used to find anything, only to redact partners' free text
    names: set[str] = field(default_factory=set)

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

    def keys(self, secret: str) -> set[tuple[str, str]]:
        """``(identity type, keyed hash)`` of every identity resolved: how the ledger's registry
        recognises the same person in another request without holding an identity."""
        values = [("account_id", str(a)) for a in self.account_ids]
        values += [("email", e) for e in self.emails] + [("phone", p) for p in self.phones]
        return {(kind, keyed_hash(f"{kind}:{value}", secret)) for kind, value in values}

    def summary(self) -> dict:
        """Counts only: safe for logs, XCom and the ledger."""
        return {
            "accounts": len(self.account_ids),
            "emails": len(self.emails),
            "phones": len(self.phones),
            "ambiguous_phones": len(self.ambiguous_phones),
            "recipients": sorted(self.recipients),
            "conflicting_identity_types": sorted(self.conflicts),
            "unverified_identity_types_ignored": sorted(self.ignored),
        }


@dataclass
class _Accounts:
    """The accounts a batch's identities point at: normalised identity -> account ids."""

    by: dict[tuple[str, Any], set[int]] = field(default_factory=lambda: defaultdict(set))
    email_of: dict[int, str] = field(default_factory=dict)
    phone_of: dict[int, str] = field(default_factory=dict)
    names_of: dict[int, set[str]] = field(default_factory=dict)
    #: (type, value) -> (account, replaced at) of identities a rectification replaced
    aliases: dict[tuple[str, Any], list[tuple[int, datetime]]] = field(default_factory=dict)

    def accounts(self, kind: str, value: Any, received_at: datetime | None) -> set[int]:
        """Accounts holding the identity now, and those it was replaced on after ``received_at``."""
        held = self.by.get((kind, value), set())
        if received_at is None or (kind, value) not in self.aliases:
            return held
        return held | {a for a, replaced in self.aliases[(kind, value)] if received_at <= replaced}


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
        self.columns = {
            f.identity: LinkColumn(f.name, f.identity, f.phone_format or "e164", f.phone_region)
            for f in accounts.fields
            if f.identity in ANCHOR_ORDER
        }
        self.id_col = self.columns["account_id"].name
        self.name_fields = [f.name for f in accounts.fields if "user.name" in f.data_categories]

    @remembering_email_keys
    def resolve(self, batch: list[SubjectQuery]) -> list[ResolvedSubject]:
        with self.engine.connect() as conn:
            wanted: dict[str, set[Any]] = defaultdict(set)
            for query in batch:
                for kind, value in query.given().items():
                    wanted[kind].add(value)
            found = self._find(conn, wanted)
            in_play = {p for query in batch if query.phone for p in [query.phone]} | set(found.phone_of.values())
            shared = self._shared_phones(conn, in_play)
            resolved = [self._resolve_one(query, found, shared) for query in batch]
            self._recipients(conn, [s for s in resolved if not s.conflicts])
        return resolved

    def _resolve_one(self, query: SubjectQuery, found: _Accounts, shared: set[str]) -> ResolvedSubject:
        subject = ResolvedSubject(query.request_id)
        given = query.given()

        def accounts_of(kind: str, value: Any) -> set[int]:
            if kind == "phone" and value in shared:
                return set()  # a company line links nobody
            return found.accounts(kind, value, query.received_at)

        anchor = query.anchor()
        linked = accounts_of(anchor, given[anchor]) if anchor else set()
        verified = set(query.verified)
        for kind, value in given.items():
            if kind == anchor:
                continue
            theirs = found.accounts(kind, value, query.received_at)
            if kind == "phone" and value in shared:
                # a company line is the subject's when one of its holders is the subject's account
                disagrees = bool(theirs) and not theirs & linked
            else:
                disagrees = bool(theirs) and not theirs <= linked
            if disagrees:
                subject.conflicts.add(kind)
            if kind in query.bound_to_anchor and not theirs & linked:
                verified.discard(kind)  # proven only as the anchor account's own, and it is not
            if kind not in verified:
                subject.ignored.add(kind)
        if subject.conflicts:
            return subject  # nothing is merged; the caller stops before gathering
        for kind, value in given.items():
            if kind in verified:
                self._add(subject, kind, value, shared)
        for account_id in linked:
            subject.account_ids.add(account_id)
            if account_id in found.email_of:
                subject.emails.add(found.email_of[account_id])
            if account_id in found.phone_of:
                self._add(subject, "phone", found.phone_of[account_id], shared)
            subject.names |= found.names_of.get(account_id, set())
        subject.email_hashes = {keyed_hash(e, self.hash_secret) for e in subject.emails}
        return subject

    @staticmethod
    def _add(subject: ResolvedSubject, kind: str, value: Any, shared: set[str]) -> None:
        if kind == "phone":
            (subject.ambiguous_phones if value in shared else subject.phones).add(value)
        elif kind == "email":
            subject.emails.add(value)
        elif kind == "account_id":
            pass  # an account id links through ``linked``; one that exists nowhere adds nothing

    def _find(self, conn: Connection, wanted: dict[str, set[Any]]) -> _Accounts:
        """Accounts holding any wanted identity, with their own normalised email and phone."""
        from sqlalchemy import column, select, table

        names = {c.name for c in self.columns.values()} | set(self.name_fields)
        t = table(self.account_collection, *(column(n) for n in names))
        found = _Accounts()
        condition = where_any(t, list(self.columns.values()), wanted)
        for row in conn.execute(select(t).where(condition)).mappings():
            account_id = self.columns["account_id"].identity_of(row[self.id_col])
            if account_id is None:
                continue
            parts = [str(row[n]).strip() for n in self.name_fields if row[n] and str(row[n]).strip()]
            found.names_of[account_id] = {p for p in [*parts, " ".join(parts)] if len(p) > 1}
            for kind, link in self.columns.items():
                value = link.identity_of(row[link.name])
                if value is None:
                    continue
                if kind == "email":
                    found.email_of[account_id] = value
                elif kind == "phone":
                    found.phone_of[account_id] = value
                if value in wanted.get(kind, set()):
                    found.by[(kind, value)].add(account_id)
        from include.dsr.identity import aliases

        found.aliases = aliases.lookup(conn, wanted, self.hash_secret)
        if found.aliases:  # the aliased accounts' own (current) identities and names
            missing = {a for links in found.aliases.values() for a, _ in links} - set(found.email_of)
            if missing:
                extra = self._find(conn, {"account_id": missing})
                found.email_of.update(extra.email_of)
                found.phone_of.update(extra.phone_of)
                found.names_of.update(extra.names_of)
        return found

    def _shared_phones(self, conn: Connection, phones: set[str]) -> set[str]:
        """Phones (E.164) that more than one account holds, however each account wrote it."""
        from sqlalchemy import column, select, table

        if not phones or "phone" not in self.columns:
            return set()
        link = self.columns["phone"]
        t = table(self.account_collection, column(self.id_col), column(link.name))
        holders: dict[str, set[Any]] = defaultdict(set)
        for row in conn.execute(select(t).where(where_any(t, [link], {"phone": phones}))).mappings():
            number = link.identity_of(row[link.name])
            if number in phones:
                holders[number].add(row[self.id_col])
        return {number for number, ids in holders.items() if len(ids) > 1}

    def _recipients(self, conn: Connection, subjects: list[ResolvedSubject]) -> None:
        """Partner systems that received rows of each subject's accounts (``shared_with``)."""
        from sqlalchemy import column as col
        from sqlalchemy import select, table

        owner: dict[int, list[ResolvedSubject]] = defaultdict(list)  # two requests may name one account
        for subject in subjects:
            for account_id in subject.account_ids:
                owner[account_id].append(subject)
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
            for chunk in chunks(owner):
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
                    for subject in owner[account_id]:
                        subject.recipients.add(str(names[value]))

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
