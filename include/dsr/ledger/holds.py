"""Legal holds ops place on a subject or a collection (litigation, an audit): the retention run
deletes nothing under one. Each add and release is an event of the ledger's chain.

A subject hold names an account id and/or the keyed hash of an email (the CLI resolves an email
to its accounts when the hold is placed); a collection hold names ``system`` and ``collection``
(or the whole system). A hold ends at ``until`` or when released. The ledger event keeps the
hold's id, scope and dates; the reason (free text, which may name people) stays in the table.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import insert, or_, select, update

from include.dsr.core.errors import TerminalError
from include.dsr.ledger.schema import dsr_legal_holds

if TYPE_CHECKING:
    from include.dsr.ledger.api import Ledger

SUBJECT, COLLECTION = "subject", "collection"


@dataclass(frozen=True)
class Hold:
    hold_id: str
    scope: str
    system: str
    collection: str | None
    account_id: str | None
    key_hash: str | None
    reason: str
    until: datetime | None
    created_by: str
    created_at: datetime
    released_at: datetime | None

    def in_force(self, now: datetime) -> bool:
        return self.released_at is None and (self.until is None or self.until > now)

    def covers(self, system: str, collection: str) -> bool:
        """A collection hold over ``collection`` (or over the whole system)."""
        return self.scope == COLLECTION and self.system == system and self.collection in (None, collection)


class LegalHolds:
    """:param ledger: the ledger (holds live in its database, their events in its chain)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def add(
        self,
        scope: str,
        reason: str,
        created_by: str,
        system: str = "fabconnect_app",
        collection: str | None = None,
        account_ids: list[int] | None = None,
        key_hash: str | None = None,
        until: datetime | None = None,
        now: datetime | None = None,
    ) -> list[Hold]:
        """Place a hold (a subject hold: one row per account, plus the email's hash); returns them."""
        now = now or datetime.now(UTC)
        if scope not in (SUBJECT, COLLECTION):
            raise TerminalError(f"a hold's scope is {SUBJECT} or {COLLECTION}")
        if not reason or not reason.strip():
            raise TerminalError("a hold needs its reason (the legal basis of keeping the data)")
        if until is not None and until <= now:
            raise TerminalError("a hold's end date must be in the future")
        if scope == SUBJECT and not (account_ids or key_hash):
            raise TerminalError("a subject hold needs an account id or an email")
        if scope == COLLECTION and (account_ids or key_hash):
            raise TerminalError("a collection hold names no subject")
        group = secrets.token_hex(4)
        keys: list[tuple[str | None, str | None]] = [(str(a), key_hash) for a in (account_ids or [])] or [
            (None, key_hash)
        ]
        rows = [
            {
                "hold_id": f"HOLD-{now:%Y%m%d}-{group}" + (f"-{i + 1}" if len(keys) > 1 else ""),
                "scope": scope,
                "system": system,
                "collection": collection,
                "account_id": account,
                "key_hash": digest,
                "reason": reason.strip(),
                "until": until,
                "created_by": created_by,
                "created_at": now,
            }
            for i, (account, digest) in enumerate(keys)
        ]
        with self.ledger.engine.begin() as conn:
            conn.execute(insert(dsr_legal_holds), rows)
        for row in rows:
            self.ledger.append_event(
                None,
                "hold.added",
                {"hold_id": row["hold_id"], "scope": scope, "system": system, "collection": collection, "until": until},
            )
        placed = [self.get(str(r["hold_id"])) for r in rows]
        return [h for h in placed if h is not None]

    def release(self, hold_id: str, released_by: str, now: datetime | None = None) -> Hold:
        now = now or datetime.now(UTC)
        hold = self.get(hold_id)
        if hold is None:
            raise TerminalError(f"no hold {hold_id}")
        if hold.released_at is not None:
            raise TerminalError(f"hold {hold_id} was released on {hold.released_at:%Y-%m-%d}")
        with self.ledger.engine.begin() as conn:
            conn.execute(
                update(dsr_legal_holds)
                .where(dsr_legal_holds.c.hold_id == hold_id)
                .values(released_at=now, released_by=released_by)
            )
        self.ledger.append_event(None, "hold.released", {"hold_id": hold_id, "scope": hold.scope})
        released = self.get(hold_id)
        assert released is not None
        return released

    def get(self, hold_id: str) -> Hold | None:
        with self.ledger.engine.connect() as conn:
            row = conn.execute(select(dsr_legal_holds).where(dsr_legal_holds.c.hold_id == hold_id)).first()
        return _hold(row) if row is not None else None

    def list(self, in_force_at: datetime | None = None) -> list[Hold]:
        """Every hold (newest first), or those in force at ``in_force_at``."""
        query = select(dsr_legal_holds).order_by(dsr_legal_holds.c.created_at.desc(), dsr_legal_holds.c.hold_id)
        if in_force_at is not None:
            t = dsr_legal_holds.c
            query = query.where(t.released_at.is_(None), or_(t.until.is_(None), t.until > in_force_at))
        with self.ledger.engine.connect() as conn:
            return [_hold(r) for r in conn.execute(query)]


def _hold(r) -> Hold:
    return Hold(
        r.hold_id,
        r.scope,
        r.system,
        r.collection,
        r.account_id,
        r.key_hash,
        r.reason,
        r.until,
        r.created_by,
        r.created_at,
        r.released_at,
    )
