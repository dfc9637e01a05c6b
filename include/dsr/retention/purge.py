"""Set-based, chunked retention of one platform collection: delete (or anonymise) its expired rows,
never holding a long lock.

The collection is walked by primary-key range, ``batch`` keys at a time; each range is one short
transaction of one statement (``DELETE ... WHERE <range> AND <expired> AND NOT <kept>
RETURNING``), so a lock lasts as long as one batch, whatever the table's size. A row is kept when:

* a legal hold covers its collection, or its subject (an account id; or an email's keyed hash,
  checked in Python for rows keyed by email alone);
* an erasure keeps it under a legal obligation whose ``retain_until`` has not come;
* a row still retained points at it (an order at its quote): deleting it would leave that dangling;
* (anonymisation only) its subject is restricted: a restriction allows storage and nothing else.

Objects that deleted rows name (uploaded specifications, ID-document copies) are deleted with
every version, in batches of 1,000. SQLite and PostgreSQL (``RETURNING`` on both).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, column, delete, exists, false, func, not_, or_, select, table, update

from include.dsr.connectors.sql_erasure import HASH_PREFIX
from include.dsr.core.data_map import NOT_PERSONAL
from include.dsr.core.identities import normalize_email
from include.dsr.core.pii import keyed_hash
from include.dsr.rights.platform_rows import account_link

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from include.dsr.core.data_map import Collection, DataMap
    from include.dsr.retention.rules import RetentionRule

log = logging.getLogger(__name__)
BATCH_ROWS = 50_000  # bench_retention: 0.66 of a raw DELETE's throughput, locks of 0.25 s


@dataclass
class Exclusions:
    """What the run must not touch, gathered once per run."""

    collection_holds: set[tuple[str, str | None]] = field(default_factory=set)  # (system, collection | None)
    held_accounts: set[int] = field(default_factory=set)
    held_email_hashes: set[str] = field(default_factory=set)
    held_rows: dict[str, set[str]] = field(default_factory=dict)  # collection -> row keys an erasure keeps
    restricted_accounts: set[int] = field(default_factory=set)

    def holds_collection(self, system: str, collection: str) -> bool:
        return (system, collection) in self.collection_holds or (system, None) in self.collection_holds


@dataclass
class Outcome:
    """Counts of one collection's run (no values)."""

    expired: int = 0
    deleted: int = 0
    anonymised: int = 0
    held: int = 0
    kept_referenced: int = 0
    kept_restricted: int = 0
    objects: list[str] = field(default_factory=list)
    batches: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "expired": self.expired,
            "deleted": self.deleted,
            "anonymised": self.anonymised,
            "held": self.held,
            "kept_referenced": self.kept_referenced,
            "kept_restricted": self.kept_restricted,
            "objects": len(self.objects),
            "batches": self.batches,
        }


def email_hold_hash(email: str, secret: str) -> str:
    """The keyed hash a subject hold stores for an email (the registries' ``email:<value>`` form)."""
    return keyed_hash(f"email:{email}", secret)


class CollectionPurge:
    """:param cutoff: rows whose clock is before it have expired (naive UTC, as the platform stores)"""

    def __init__(
        self,
        engine: Engine,
        data_map: DataMap,
        rule: RetentionRule,
        cutoff: datetime,
        exclusions: Exclusions,
        secret: str,
        batch: int = BATCH_ROWS,
    ) -> None:
        self.engine, self.rule, self.secret, self.batch = engine, rule, secret, batch
        self.system = data_map.system(rule.system)
        self.coll: Collection = self.system.collection(rule.collection)
        self.cutoff: datetime | date = cutoff.astimezone(UTC).replace(tzinfo=None) if cutoff.tzinfo else cutoff
        self.ex = exclusions
        self.pk = self.coll.primary_key
        self.link = account_link(self.coll, required=False)
        self.email_fields = [f.name for f in self.coll.fields if f.identity == "email"]
        self.object_fields = _object_fields(data_map, self.coll.name)
        self.referrers = [
            (c.name, f.name)
            for c in self.system.collections
            if c.name != self.coll.name
            for f in c.fields
            for r in f.references
            if r.collection == self.coll.name and r.field == self.pk
        ]
        self.t = table(self.coll.name, *(column(n) for n in self.coll.field_names))
        if rule.clock and _is_date_column(engine, self.coll.name, rule.clock):
            # a day, not a moment: a row dated on the anniversary is kept through that day (and a
            # date is compared with a date: SQLite compares the text, '2018-12-01' < '2018-12-01 00:00')
            self.cutoff = self.cutoff.date()
        #: the run's other collections by name: a row is kept only for rows that survive the run
        self.peers: dict[str, CollectionPurge] = {}

    # -- conditions ---------------------------------------------------------------------------

    def expired(self):
        t, clock = self.t, self.rule.clock
        assert clock is not None
        only = [and_(t.c[k].is_not(None), t.c[k] == v) for k, v in self.rule.only_when.items()]  # never NULL
        return and_(t.c[clock].is_not(None), t.c[clock] < self.cutoff, *only)

    def _held(self):
        t, clauses = self.t, []
        if self.link and self.ex.held_accounts:  # NULL IN (...) is NULL, and NOT NULL keeps the row: say no
            clauses.append(and_(t.c[self.link].is_not(None), t.c[self.link].in_(sorted(self.ex.held_accounts))))
        rows = self.ex.held_rows.get(self.coll.name)
        if rows:
            clauses.append(t.c[self.pk].in_(sorted(int(k) if str(k).isdigit() else k for k in rows)))
        return or_(*clauses) if clauses else false()

    def _referenced(self):
        """A row that survives this run points at it. A pointing row the run itself deletes (an
        invoice past its 8 years pointing at an order past its 10) does not keep it: the plan then
        says exactly what the run, which goes children first, will do."""
        clauses = []
        for name, fname in self.referrers:
            peer = self.peers.get(name)
            if peer is not None and peer.removes_in_sql:
                points = peer.t.c[fname] == self.t.c[self.pk]
                clauses.append(exists().where(points, not_(peer.deletable())))
            else:
                other = table(name, column(fname))
                clauses.append(exists().where(other.c[fname] == self.t.c[self.pk]))
        return or_(*clauses) if clauses else false()

    def _restricted(self):
        if self.rule.action != "anonymise" or not self.link or not self.ex.restricted_accounts:
            return false()
        link = self.t.c[self.link]
        return and_(link.is_not(None), link.in_(sorted(self.ex.restricted_accounts)))

    def _blocking_references(self):
        """Rows still pointing at it keep a row from deletion; an anonymised row stays, so they do not matter."""
        return false() if self.rule.action == "anonymise" else self._referenced()

    def deletable(self):
        return and_(self.expired(), not_(self._held()), not_(self._blocking_references()), not_(self._restricted()))

    def _email_held(self, row) -> bool:
        if not self.ex.held_email_hashes:
            return False
        for name in self.email_fields:
            email = normalize_email(row[name]) if row[name] else None
            if email and email_hold_hash(email, self.secret) in self.ex.held_email_hashes:
                return True
        return False

    @property
    def removes_in_sql(self) -> bool:
        """Whether ``deletable()`` alone says which of its rows this run deletes: not when a hold
        covers the collection, rows are anonymised (they stay), or holds are checked in Python."""
        return (
            self.rule.clock is not None
            and self.rule.action == "delete"
            and not self.ex.holds_collection(self.system.key, self.coll.name)
            and not self._filters_in_python
        )

    @property
    def _filters_in_python(self) -> bool:
        return bool(self.ex.held_email_hashes and self.email_fields) or self.rule.action == "anonymise"

    # -- the run ------------------------------------------------------------------------------

    def count(self) -> Outcome:
        """What a run would do (the dry run, and the checks before and after)."""
        out = Outcome()
        if self.rule.clock is None:
            return out
        with self.engine.connect() as conn:
            out.expired = self._count(conn, self.expired())
            if self.ex.holds_collection(self.system.key, self.coll.name):
                out.held = out.expired
                return out
            out.held = self._count(conn, and_(self.expired(), self._held()))
            out.kept_referenced = self._count(
                conn, and_(self.expired(), not_(self._held()), self._blocking_references())
            )
            out.kept_restricted = self._count(
                conn, and_(self.expired(), not_(self._held()), not_(self._blocking_references()), self._restricted())
            )
            if self.ex.held_email_hashes and self.email_fields:
                rows = conn.execute(select(self.t).where(self.deletable())).mappings()
                email_held = sum(1 for row in rows if self._email_held(row))
                out.held += email_held
        would = out.expired - out.held - out.kept_referenced - out.kept_restricted
        if self.rule.action == "anonymise":
            out.anonymised = would
        else:
            out.deleted = would
        return out

    def _count(self, conn: Connection, where) -> int:
        return conn.execute(select(func.count()).select_from(self.t).where(where)).scalar_one()

    def run(self, delete_objects: Callable[[list[str]], object] | None = None) -> Outcome:
        """Delete or anonymise every deletable row, ``batch`` rows per short transaction.

        Integer keys go by key range (each range starts at the next deletable key, so gaps cost
        nothing); other keys, and rows checked in Python, by pages of keys in key order. The objects
        a batch's rows name are deleted inside its transaction, before it commits: if the store
        fails, the rows stay and a retry finds them.
        """
        out = self.count()
        out.deleted = out.anonymised = 0
        if self.rule.clock is None or self.ex.holds_collection(self.system.key, self.coll.name):
            return out
        if self.rule.action == "delete" and not self._filters_in_python and self._integer_keys():
            self._delete_by_key_range(out, delete_objects)
        else:
            self._by_pages(out, delete_objects)
        log.info("retention %s.%s: %s", self.system.key, self.coll.name, out.to_json())
        return out

    def _integer_keys(self) -> bool:
        from sqlalchemy import Integer, inspect

        return any(
            c["name"] == self.pk and isinstance(c["type"], Integer)
            for c in inspect(self.engine).get_columns(self.coll.name)
        )

    def _next_key(self, conn: Connection, at_least: int | None):
        """The smallest deletable key from ``at_least`` on: the next range starts there, so gaps in
        the key space (sparse ids, kept rows) cost one indexed lookup, not empty transactions."""
        query = select(func.min(self.t.c[self.pk])).where(self.deletable())
        if at_least is not None:
            query = query.where(self.t.c[self.pk] >= at_least)
        return conn.execute(query).scalar()

    def _delete_by_key_range(self, out: Outcome, delete_objects) -> None:
        """``DELETE ... WHERE pk >= a AND pk < a + batch AND deletable``: an index range per batch.

        On PostgreSQL each batch commits with ``synchronous_commit = off``: a crash may lose the last
        few batches' commits, which the next run (idempotent) simply deletes again."""
        with self.engine.connect() as conn:
            start = self._next_key(conn, None)
        returning = [self.t.c[f] for f in self.object_fields]
        while start is not None:
            end = int(start) + self.batch
            with self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                stmt = delete(self.t).where(self.t.c[self.pk] >= start, self.t.c[self.pk] < end, self.deletable())
                if returning:
                    rows = conn.execute(stmt.returning(*returning)).all()
                    objects = [v for r in rows for v in r if v]
                    removed = len(rows)
                else:
                    objects, removed = [], conn.execute(stmt).rowcount or 0
                if objects and delete_objects is not None:
                    delete_objects(objects)  # before the commit: a store failure rolls the rows back
                out.objects += objects
                out.deleted += removed
                start = self._next_key(conn, end)
            out.batches += 1

    def _by_pages(self, out: Outcome, delete_objects) -> None:
        """Pages of ``batch`` deletable keys in key order (``pk > last``): rows filtered in Python
        (email holds), anonymised rows, and keys that are not integers."""
        last = None
        while True:
            with self.engine.begin() as conn:
                page = select(self.t.c[self.pk]).where(self.deletable())
                if last is not None:
                    page = page.where(self.t.c[self.pk] > last)
                keys = [k for (k,) in conn.execute(page.order_by(self.t.c[self.pk]).limit(self.batch))]
                if not keys:
                    return
                last = keys[-1]
                in_page = and_(self.t.c[self.pk] >= keys[0], self.t.c[self.pk] <= last)
                if self.rule.action == "anonymise":
                    out.anonymised += self._anonymise(conn, in_page)
                    objects: list[str] = []
                else:
                    removed, objects = self._delete(conn, in_page)
                    out.deleted += removed
                if objects and delete_objects is not None:
                    delete_objects(objects)
                out.objects += objects
            out.batches += 1

    def _delete(self, conn: Connection, in_page) -> tuple[int, list[str]]:
        """Delete the page's deletable rows (the predicate re-checked in the statement itself)."""
        returning = [self.t.c[self.pk], *(self.t.c[f] for f in self.object_fields)]
        if not self._filters_in_python:
            rows = conn.execute(delete(self.t).where(in_page, self.deletable()).returning(*returning)).all()
            return len(rows), [r[i] for r in rows for i in range(1, len(returning)) if r[i]]
        rows = conn.execute(select(self.t).where(in_page, self.deletable())).mappings().all()
        ids = [r[self.pk] for r in rows if not self._email_held(r)]
        if not ids:
            return 0, []
        gone = conn.execute(
            delete(self.t).where(self.t.c[self.pk].in_(ids), self.deletable()).returning(*returning)
        ).all()
        return len(gone), [r[i] for r in gone for i in range(1, len(returning)) if r[i]]

    def _anonymise(self, conn: Connection, in_page) -> int:
        rows = conn.execute(select(self.t).where(in_page, self.deletable())).mappings().all()
        done = 0
        for row in rows:
            if self._email_held(row):
                continue
            values = self._anonymous(row)
            where = and_(self.t.c[self.pk] == row[self.pk], self.deletable())  # still expired (no login since)
            done += conn.execute(update(self.t).where(where).values(**values)).rowcount or 0
        return done

    def _anonymous(self, row) -> dict[str, Any]:
        """The row's personal fields emptied, or replaced by keyed hashes where the data map says
        ``hash`` (a column that identifies the row to other systems and may not be empty)."""
        values: dict[str, Any] = {}
        for f in self.coll.fields:
            if f.primary_key or f.references or f.data_categories == [NOT_PERSONAL] or f.identity == "account_id":
                continue
            strategy = f.erasure or self.coll.erasure
            value = row[f.name]
            if value is None or (isinstance(value, str) and value.startswith(HASH_PREFIX)):
                continue
            values[f.name] = f"{HASH_PREFIX}{keyed_hash(str(value), self.secret)}" if strategy == "hash" else None
        if self.rule.clock and self.rule.clock not in values:
            values[self.rule.clock] = None  # the clock stops: a second run finds nothing to do
        return values


def _is_date_column(engine: Engine, table_name: str, name: str) -> bool:
    from sqlalchemy import Date, DateTime, inspect

    for col in inspect(engine).get_columns(table_name):
        if col["name"] == name:
            return isinstance(col["type"], Date) and not isinstance(col["type"], DateTime)
    return False


def _object_fields(data_map: DataMap, collection: str) -> list[str]:
    """Fields of ``collection`` that name objects in an object store (``object_key_field``)."""
    found = []
    for system in data_map.systems:
        for coll in system.collections:
            if coll.object_key_field and coll.object_key_field.partition(".")[0] == collection:
                found.append(coll.object_key_field.partition(".")[2])
    return sorted(set(found))
