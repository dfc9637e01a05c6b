"""One retention run over the platform DB, the object store and the product's own copies.

:func:`plan` says per collection what would go and what is kept (by a hold, a row still pointing at
it, a restriction), touching nothing: it is the dry run, and the baseline of the checks.
:func:`apply` first deletes the rows an erasure kept under a legal obligation whose
``retain_until`` has passed (and marks them deleted in the registry), then every enforced rule in
foreign-key order (children first), then the product's own copies. :func:`check` runs Great
Expectations over the result (no expired row left outside what keeps it; the held rows byte for
byte as before), and :func:`record` writes the run's counts to the ledger as one event, which the
compliance dashboard shows. Every function is idempotent: a second run removes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from include.dsr.core.errors import CheckFailedError
from include.dsr.retention.purge import BATCH_ROWS, CollectionPurge, Exclusions
from include.dsr.retention.rules import platform_rules

if TYPE_CHECKING:
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)
PLATFORM, OBJECTS = "fabconnect_app", "fabconnect_s3"
RUN_EVENT, DRY_RUN_EVENT = "retention.run", "retention.dry_run"


def exclusions(rt: Runtime, now: datetime) -> Exclusions:
    """Holds in force, an erasure's held rows not yet due, and restricted subjects, read once."""
    from include.dsr.ledger.holds import COLLECTION, SUBJECT, LegalHolds
    from include.dsr.processing import restrictions

    holds = LegalHolds(rt.ledger).list(in_force_at=now)
    held_rows: dict[str, set[str]] = {}
    for row in rt.registry.held():
        if row.system == PLATFORM and row.retain_until > now:
            held_rows.setdefault(row.collection, set()).add(row.row_key)
    from sqlalchemy import inspect

    restricted = (  # no registry yet: nobody was ever restricted (a dry run creates nothing)
        restrictions.restricted_accounts(rt.app_engine, "retention")
        if inspect(rt.app_engine).has_table(restrictions.restrictions.name)
        else set()
    )
    return Exclusions(
        collection_holds={(h.system, h.collection) for h in holds if h.scope == COLLECTION},
        held_accounts={int(h.account_id) for h in holds if h.scope == SUBJECT and h.account_id},
        held_email_hashes={h.key_hash for h in holds if h.scope == SUBJECT and h.key_hash},
        held_rows=held_rows,
        restricted_accounts=restricted,
    )


def _purges(rt: Runtime, now: datetime, ex: Exclusions, batch: int) -> list[CollectionPurge]:
    """One purge per enforced rule, children first, each knowing the others (see ``_referenced``)."""
    enforced, _ = platform_rules(rt.data_map)
    purges = [
        CollectionPurge(rt.app_engine, rt.data_map, r, r.cutoff(now), ex, rt.hash_secret, batch) for r in enforced
    ]
    peers = {p.coll.name: p for p in purges}
    for purge in purges:
        purge.peers = peers
    return purges


def _held_digest(purge: CollectionPurge) -> str:
    """SHA-256 of every row a hold or an erasure keeps, in key order (the check compares it)."""
    with purge.engine.connect() as conn:
        rows = conn.execute(select(purge.t).where(purge._held()).order_by(purge.t.c[purge.pk])).all()
    return hashlib.sha256("\n".join(repr(tuple(r)) for r in rows).encode()).hexdigest()


def _next_due(purge: CollectionPurge) -> str | None:
    if purge.rule.clock is None:
        return None
    t, clock = purge.t, purge.rule.clock
    where = [t.c[clock].is_not(None), *(t.c[k] == v for k, v in purge.rule.only_when.items())]
    with purge.engine.connect() as conn:
        oldest = conn.execute(select(func.min(t.c[clock])).where(*where)).scalar_one()
    return purge.rule.next_due(oldest)


def plan(rt: Runtime, now: datetime | None = None, after_days: float = 30, batch: int = BATCH_ROWS) -> dict[str, Any]:
    """What a run would do, per collection (counts, cutoffs, bases); touches nothing."""
    from dataclasses import replace

    from include.dsr.retention.own_copies import own_copies

    now = now or datetime.now(UTC)
    ex = exclusions(rt, now)
    _, not_enforced = platform_rules(rt.data_map)
    due = [r for r in rt.registry.held(due_by=now) if r.system == PLATFORM]
    due_by: dict[str, set[str]] = {}
    for row in due:
        due_by.setdefault(row.collection, set()).add(row.row_key)
    # The run deletes due leftovers before the rules: the rules' counts leave them out
    counting = replace(
        ex, held_rows={c: ex.held_rows.get(c, set()) | due_by.get(c, set()) for c in {*ex.held_rows, *due_by}}
    )
    as_held = {p.coll.name: (_held_digest(p), p.count().held) for p in _purges(rt, now, ex, batch)}
    collections = {}
    for purge in _purges(rt, now, counting, batch):
        counts = purge.count().to_json()
        collections[purge.coll.name] = {
            **counts,
            "held": as_held[purge.coll.name][1],
            "held_leftovers_due": len(due_by.get(purge.coll.name, set())),
            "cutoff": purge.cutoff.isoformat(),
            "period": purge.rule.period,
            "action": purge.rule.action,
            "basis": purge.rule.basis,
            "held_digest": as_held[purge.coll.name][0],
        }
    copies = own_copies(rt.s3, rt.exports_bucket, rt.ledger, now, after_days)
    return {
        "now": now.isoformat(),
        "collections": collections,
        "not_enforced": {r.collection: f"{r.period} from {r.action and r.basis}" for r in not_enforced},
        "held_leftovers_due": len(due),
        "own_copies": {k: len(v) for k, v in copies.items()},
    }


def purge_held_leftovers(rt: Runtime, now: datetime, ex: Exclusions, chunk: int = 500) -> dict[str, int]:
    """Delete the rows an erasure kept whose ``retain_until`` has passed, and mark them deleted;
    a legal hold over the row (its collection, or its account) keeps it, as does a row still
    pointing at it. One short transaction per ``chunk`` rows."""
    from sqlalchemy import column, delete, exists, or_, table

    from include.dsr.rights.platform_rows import account_link

    due = [r for r in rt.registry.held(due_by=now) if r.system == PLATFORM]
    system = rt.data_map.system(PLATFORM)
    deleted, kept, held = [], 0, 0
    for i in range(0, len(due), chunk):
        with rt.app_engine.begin() as conn:
            for row in due[i : i + chunk]:
                if ex.holds_collection(PLATFORM, row.collection):
                    held += 1
                    continue
                coll = system.collection(row.collection)
                link = account_link(coll, required=False)
                t = table(coll.name, *(column(n) for n in {coll.primary_key, *([link] if link else [])}))
                key = int(row.row_key) if row.row_key.isdigit() else row.row_key
                if link and ex.held_accounts:
                    owner = conn.execute(select(t.c[link]).where(t.c[coll.primary_key] == key)).scalar()
                    if owner is not None and int(owner) in ex.held_accounts:
                        held += 1
                        continue
                pointing = [
                    exists().where(table(c.name, column(f.name)).c[f.name] == t.c[coll.primary_key])
                    for c in system.collections
                    for f in c.fields
                    for r in f.references
                    if r.collection == coll.name and c.name != coll.name
                ]
                stmt = delete(t).where(t.c[coll.primary_key] == key)
                if pointing:
                    stmt = stmt.where(~or_(*pointing))
                if conn.execute(stmt).rowcount:
                    deleted.append(row)
                elif conn.execute(select(t.c[coll.primary_key]).where(t.c[coll.primary_key] == key)).first():
                    kept += 1  # a row still retained points at it: it waits for that row
                else:
                    deleted.append(row)  # gone already (an earlier run, or the rule's own delete)
    rt.registry.mark_deleted(deleted, now)
    # rows, not registry entries: two erasures (a wave, a repeated request) may have kept one row
    rows = {(r.collection, r.row_key) for r in deleted}
    per_collection: dict[str, int] = {}
    for collection, _ in rows:
        per_collection[collection] = per_collection.get(collection, 0) + 1
    return {"deleted": len(rows), "kept_referenced": kept, "held": held, "by_collection": per_collection}


def apply(rt: Runtime, now: datetime | None = None, after_days: float = 30, batch: int = BATCH_ROWS) -> dict[str, Any]:
    """Carry the run out; returns the counts per collection, the objects and own copies removed."""
    from include.dsr.connectors.object_store import delete_versions
    from include.dsr.retention.own_copies import purge_own_copies

    now = now or datetime.now(UTC)
    ex = exclusions(rt, now)
    leftovers = purge_held_leftovers(rt, now, ex)
    store = rt.connector(OBJECTS)
    collections: dict[str, dict] = {}
    versions = [0]

    def delete_objects(keys: list[str]) -> None:
        # inside the batch's transaction: a store that fails rolls the rows back, so a retry finds them
        versions[0] += delete_versions(store.s3, store.bucket, sorted(set(keys)))["versions"]  # type: ignore[attr-defined]

    for purge in _purges(rt, now, ex, batch):
        object_held = any(ex.holds_collection(OBJECTS, c.name) for c in rt.data_map.system(OBJECTS).collections)
        out = purge.run(None if object_held else delete_objects)
        collections[purge.coll.name] = {
            **out.to_json(),
            # expired rows an erasure kept and whose retain_until passed went first (the plan counts them here)
            "held_leftovers_deleted": leftovers["by_collection"].get(purge.coll.name, 0),
            "next_due": _next_due(purge),
        }
    objects = versions[0]
    copies = purge_own_copies(rt.s3, rt.exports_bucket, rt.ledger, now, after_days)
    return {
        "now": now.isoformat(),
        "collections": collections,
        "held_leftovers": leftovers,
        "object_versions_deleted": objects,
        "own_copies": copies,
    }


def check(rt: Runtime, planned: dict[str, Any], now: datetime | None = None, batch: int = BATCH_ROWS) -> dict[str, Any]:
    """Great Expectations after the run: per collection no deletable expired row is left, and the
    rows holds and erasures keep are byte for byte what they were before it."""
    import pandas as pd

    from include.dsr.checks.gx import GxRunner

    now = datetime.fromisoformat(planned["now"]) if now is None else now
    ex = exclusions(rt, now)
    rows = []
    for purge in _purges(rt, now, ex, batch):
        after = purge.count()
        before = planned["collections"][purge.coll.name]
        rows.append(
            {
                "collection": purge.coll.name,
                "left_to_go": after.deleted + after.anonymised,
                "held_unchanged": _held_digest(purge) == before["held_digest"],
            }
        )
    frame = pd.DataFrame(rows, columns=["collection", "left_to_go", "held_unchanged"])
    gx = GxRunner("dsr_retention_checks")
    outcomes = gx.outcomes(
        "retention",
        frame,
        [
            gx.E.ExpectColumnValuesToBeBetween(column="left_to_go", min_value=0, max_value=0),
            gx.E.ExpectColumnValuesToBeInSet(column="held_unchanged", value_set=[True]),
        ],
    )
    failed = [o.expectation for o in outcomes if not o.success]
    report = {"expectations": len(outcomes), "failures": len(failed), "collections": frame.to_dict("records")}
    if failed:
        bad = [r["collection"] for r in rows if r["left_to_go"] or not r["held_unchanged"]]
        raise CheckFailedError(f"retention checks failed ({', '.join(failed)}) for: {', '.join(bad)}")
    return report


def record(
    rt: Runtime, planned: dict[str, Any], applied: dict[str, Any] | None, checks: dict | None, run_id: str
) -> int:
    """The run's counts in the ledger (one chained event; no values); returns its sequence number."""
    payload: dict[str, Any] = {"run_id": run_id, "now": planned["now"], "not_enforced": planned["not_enforced"]}
    if applied is None:
        payload["would"] = {
            name: {k: v for k, v in counts.items() if k != "held_digest"}
            for name, counts in planned["collections"].items()
        }
        payload["held_leftovers_due"] = planned["held_leftovers_due"]
        payload["own_copies"] = planned["own_copies"]
        event = rt.ledger.append_event(None, DRY_RUN_EVENT, payload, dedupe_key=f"{DRY_RUN_EVENT}:{run_id}")
    else:
        payload |= {k: v for k, v in applied.items() if k != "now"}
        payload["checks"] = {k: v for k, v in (checks or {}).items() if k != "collections"}
        event = rt.ledger.append_event(None, RUN_EVENT, payload, dedupe_key=f"{RUN_EVENT}:{run_id}")
    return event.seq


def last_run(ledger) -> dict[str, Any] | None:
    """The last real run's record (the compliance dashboard's retention panel), or None."""
    latest = ledger.last_event(RUN_EVENT)
    return None if latest is None else {"at": latest.created_at.isoformat(), **latest.payload}
