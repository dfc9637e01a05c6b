"""The erasure plan: for every subject of a batch, what happens to each row and field, before anything is touched.

Per collection of the platform DB, a subject's row is

* **deleted** (``erasure: delete_row``, the default);
* **anonymised**: it survives with its personal fields emptied (``erasure: null``, e.g. the account,
  which other rows keep pointing at), or because a row that survives still references it (a quote
  an invoiced order points at): nothing is left dangling;
* **held** under a legal obligation (``erasure: keep`` on a collection with ``retention.legal_hold``,
  Art. 17(3)(b), (e)): stripped to what the law requires (fields marked ``erasure: null`` or ``hash``
  are emptied), restricted, and registered with ``retain_until`` (the retention clock field plus
  the period) and the basis, for the retention run to delete then.

Per field of an anonymised row: the field's own ``erasure`` if the data map gives one; kept when
it is not personal, an account link, or commercial facts that identify no one once the row is
unlinked (:data:`KEPT_WHEN_ANONYMISED`); else emptied (NULL), or replaced by its keyed hash where
the column cannot be NULL. Objects the subject's rows name are deleted (every version), so are the
packages and staging of the subject's earlier requests (found by keyed identities, never values).
Every email of the subject joins the suppression list (keyed hash).

The plan holds row keys and field names, never values; it is staged beside the request and
summarised (counts per collection and strategy, holds with their dates) in the ledger and the
dry-run report. Executing it is :mod:`include.dsr.rights.erasure`.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.dsr.connectors.base import REQUEST_ID_COLUMN
from include.dsr.connectors.sql_erasure import RowChanges
from include.dsr.core.erasure_terms import ANONYMISE, DELETE, HASH, HOLD, KEEP, NULL, SUPPRESSION_PURPOSE

if TYPE_CHECKING:
    from include.dsr.connectors.object_store import ObjectStoreConnector
    from include.dsr.connectors.sql_database import SqlDatabaseConnector
    from include.dsr.core.data_map import Collection, DataMap
    from include.dsr.identity.resolver import ResolvedSubject

#: Data categories an anonymised row keeps: an account link (to an account that is itself
#: anonymised) and commercial facts that say nothing about a person once the row is unlinked.
KEPT_WHEN_ANONYMISED = ("user.unique_id", "user.commercial.")
PLATFORM, OBJECTS = "fabconnect_app", "fabconnect_s3"
MODES = {"delete_row": DELETE, "null": ANONYMISE, "hash": ANONYMISE, "keep": HOLD}


@dataclass
class RequestPlan:
    """One subject's part of the plan (row keys and field names, no values)."""

    request_id: str
    rows: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # collection -> mode -> keys
    holds: list[dict] = field(default_factory=list)  # {collection, row_key, retain_until, basis, fields_kept}
    objects: dict[str, list[str]] = field(default_factory=dict)  # object collection -> keys
    own_copies: list[str] = field(default_factory=list)  # earlier request ids whose packages go
    suppress: int = 0  # emails added to the suppression list
    recipients: list[str] = field(default_factory=list)  # partner systems told to erase

    def summary(self, fields: dict[str, dict[str, dict[str, str]]]) -> dict:
        """Counts per collection and mode, the fields per strategy, holds: for the ledger and the subject."""
        collections = {}
        for name, modes in sorted(self.rows.items()):
            counts = {mode: len(keys) for mode, keys in modes.items() if keys}
            if not counts:
                continue
            strategies: dict[str, list[str]] = {}
            for mode in (ANONYMISE, HOLD):
                if counts.get(mode):
                    for fname, strategy in sorted(fields.get(name, {}).get(mode, {}).items()):
                        strategies.setdefault(f"{mode}:{strategy}", []).append(fname)
            collections[name] = {"rows": counts, "fields": strategies}
        return {
            "collections": collections,
            "rows_deleted": sum(len(m.get(DELETE, [])) for m in self.rows.values()),
            "rows_anonymised": sum(len(m.get(ANONYMISE, [])) for m in self.rows.values()),
            "rows_held": sum(len(m.get(HOLD, [])) for m in self.rows.values()),
            "holds": _hold_summary(self.holds),
            "objects": {name: len(keys) for name, keys in sorted(self.objects.items())},
            "own_copies": len(self.own_copies),
            "suppression_entries": self.suppress,
            "recipients": sorted(self.recipients),
        }

    def to_json(self) -> dict:
        return self.__dict__.copy()

    @classmethod
    def from_json(cls, raw: dict) -> RequestPlan:
        return cls(**raw)


@dataclass
class ErasurePlan:
    """The plan of a batch (one request, or a wave): per request, and the field strategies."""

    requests: dict[str, RequestPlan]
    # collection -> mode (anonymise | hold) -> field -> strategy (null | hash | keep)
    fields: dict[str, dict[str, dict[str, str]]]
    created_at: str

    def changes(self, request_ids: list[str] | None = None) -> list[RowChanges]:
        """The platform DB change set of the whole batch (or of some requests)."""
        by_coll: dict[str, RowChanges] = {}
        for request_id, plan in self.requests.items():
            if request_ids is not None and request_id not in request_ids:
                continue
            for name, modes in plan.rows.items():
                change = by_coll.setdefault(name, RowChanges(name, self.keys.get(name, "id")))
                change.delete += modes.get(DELETE, [])
                for mode in (ANONYMISE, HOLD):
                    for fname, strategy in self.fields.get(name, {}).get(mode, {}).items():
                        if strategy in (NULL, HASH):
                            target = change.null if strategy == NULL else change.hash
                            target.setdefault(fname, []).extend(modes.get(mode, []))
        for change in by_coll.values():
            change.delete = sorted(set(change.delete), key=str)
            change.null = {k: sorted(set(v), key=str) for k, v in change.null.items() if v}
            change.hash = {k: sorted(set(v), key=str) for k, v in change.hash.items() if v}
        return [c for c in by_coll.values() if c.delete or c.null or c.hash]

    keys: dict[str, str] = field(default_factory=dict)  # collection -> primary key column
    suppression_collection: str | None = None  # where the subjects' keyed email hashes are added

    def summary(self, request_id: str) -> dict:
        return self.requests[request_id].summary(self.fields)

    def to_json(self) -> dict:
        return {
            "requests": {k: v.to_json() for k, v in self.requests.items()},
            "fields": self.fields,
            "created_at": self.created_at,
            "keys": self.keys,
            "suppression_collection": self.suppression_collection,
        }

    @classmethod
    def from_json(cls, raw: dict) -> ErasurePlan:
        return cls(
            {k: RequestPlan.from_json(v) for k, v in raw["requests"].items()},
            raw["fields"],
            raw["created_at"],
            raw.get("keys", {}),
            raw.get("suppression_collection"),
        )


def _hold_summary(holds: list[dict]) -> list[dict]:
    """Holds grouped per collection and basis: rows, the fields kept, the latest retain_until."""
    grouped: dict[tuple[str, str], dict] = {}
    for hold in holds:
        item = grouped.setdefault(
            (hold["collection"], hold["basis"]),
            {
                "collection": hold["collection"],
                "basis": hold["basis"],
                "rows": 0,
                "fields_kept": hold["fields_kept"],
                "retain_until": hold["retain_until"],
            },
        )
        item["rows"] += 1
        item["retain_until"] = max(item["retain_until"], hold["retain_until"])
    return sorted(grouped.values(), key=lambda h: h["collection"])


def add_period(start: datetime, period: str) -> datetime:
    """``start`` plus an ISO-8601 period of years, months and days (month ends clamp: 29 Feb + 1Y = 28 Feb)."""
    from include.dsr.core.data_map import DURATION_PATTERN

    match = DURATION_PATTERN.match(period)
    if match is None:
        raise ValueError(f"not an ISO-8601 period: {period!r}")
    years, months, days = (int(g or 0) for g in match.groups())
    month_index = start.month - 1 + months + 12 * years
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day) + timedelta(days=days)


def _as_datetime(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return fallback


class ErasurePlanner:
    """Build the plan of a batch from the data map and what the systems hold.

    :param database: the platform DB connector  :param objects: the object-store connector
    :param earlier_requests: subject -> request ids of that person's earlier access / portability
        requests (their packages and staging are deleted too)
    """

    def __init__(
        self,
        data_map: DataMap,
        database: SqlDatabaseConnector,
        objects: ObjectStoreConnector | None,
        earlier_requests: dict[str, list[str]] | None = None,
        now: datetime | None = None,
    ) -> None:
        self.data_map = data_map
        self.system = data_map.system(PLATFORM)
        self.database, self.objects = database, objects
        self.earlier = earlier_requests or {}
        self.now = now or datetime.now(UTC)

    def plan(self, subjects: list[ResolvedSubject]) -> ErasurePlan:
        collections = [c for c in self.system.collections if c.personal]
        extra = {
            c.name: [c.retention.timestamp_field]
            for c in collections
            if MODES[c.erasure] == HOLD and c.retention and c.retention.timestamp_field
        }
        found = self.database.rows_of(subjects, collections, extra)
        requests = {s.request_id: RequestPlan(s.request_id) for s in subjects}
        stamps: dict[tuple[str, Any], Any] = {}
        for coll in collections:
            mode = MODES[coll.erasure]
            for row in found.get(coll.name, []):
                plan = requests[row[REQUEST_ID_COLUMN]]
                plan.rows.setdefault(coll.name, {DELETE: [], ANONYMISE: [], HOLD: []})[mode].append(
                    row[coll.primary_key]
                )
                if mode == HOLD and coll.retention and coll.retention.timestamp_field:
                    stamps[(coll.name, row[coll.primary_key])] = row.get(coll.retention.timestamp_field)
        fields = {
            c.name: {ANONYMISE: self._strategies(c, ANONYMISE), HOLD: self._strategies(c, HOLD)} for c in collections
        }
        self._keep_what_is_referenced(requests, fields)
        for plan in requests.values():
            for modes in plan.rows.values():
                for mode in modes:
                    modes[mode] = sorted(set(modes[mode]), key=str)
            plan.holds = self._holds(plan, fields, stamps)
        objects = self.objects.keys_by_request(subjects) if self.objects is not None else {}
        for subject in subjects:
            plan = requests[subject.request_id]
            if objects:
                plan.objects = objects[subject.request_id]
            plan.own_copies = sorted(self.earlier.get(subject.request_id, []))
            plan.suppress = len(subject.emails)
            plan.recipients = sorted(subject.recipients)
        keys = {c.name: c.primary_key for c in collections}
        suppression = next((c.name for c in collections if SUPPRESSION_PURPOSE in c.purposes), None)
        return ErasurePlan(requests, fields, self.now.isoformat(timespec="seconds"), keys, suppression)

    def _strategies(self, coll: Collection, mode: str) -> dict[str, str]:
        """field -> null | hash | keep for the subject's rows of ``coll`` that survive in ``mode``."""
        nullable = self.database.nullable_columns(coll.name)
        strategies = {}
        for f in coll.fields:
            if f.primary_key or not f.personal:
                continue
            wanted = f.erasure if f.erasure in (NULL, HASH, KEEP) else None
            if wanted is None and mode == HOLD:
                wanted = KEEP  # what the law requires stays
            if wanted is None and any(c.startswith(KEPT_WHEN_ANONYMISED) for c in f.data_categories):
                wanted = KEEP
            if wanted is None:
                wanted = HASH if coll.erasure == "hash" else NULL
            if wanted == NULL and not nullable.get(f.name, True):
                wanted = HASH  # the column cannot be empty: its keyed hash stands in
            strategies[f.name] = wanted
        return strategies

    def _keep_what_is_referenced(self, requests: dict[str, RequestPlan], fields: dict) -> None:
        """A row that a surviving row still references is anonymised instead of deleted (to a fixpoint)."""
        changed = True
        while changed:
            changed = False
            deleting = defaultdict(set)
            surviving_links = defaultdict(set)  # (collection, field) -> keys of surviving subject rows emptying it
            for plan in requests.values():
                for name, modes in plan.rows.items():
                    deleting[name] |= set(modes.get(DELETE, []))
                    for mode in (ANONYMISE, HOLD):
                        for fname, strategy in fields.get(name, {}).get(mode, {}).items():
                            if strategy in (NULL, HASH):
                                surviving_links[(name, fname)] |= set(modes.get(mode, []))
            for coll in self.system.collections:
                keys = sorted(deleting.get(coll.name, set()), key=str)
                if not keys:
                    continue
                referenced = set()
                for (ref_coll, ref_field), pairs in self.database.referencing(coll, keys).items():
                    for ref_key, target_key in pairs:
                        if ref_key in deleting.get(ref_coll, set()) and ref_coll != coll.name:
                            continue  # the referencing row goes too
                        if ref_coll == coll.name and ref_key in deleting[coll.name]:
                            continue
                        if ref_key in surviving_links.get((ref_coll, ref_field), set()):
                            continue  # the surviving row lets go of this link
                        referenced.add(target_key)
                if not referenced:
                    continue
                for plan in requests.values():
                    modes = plan.rows.get(coll.name)
                    if not modes:
                        continue
                    moving = [k for k in modes[DELETE] if k in referenced]
                    if moving:
                        modes[DELETE] = [k for k in modes[DELETE] if k not in referenced]
                        modes[ANONYMISE] = [*modes[ANONYMISE], *moving]
                        changed = True

    def _holds(self, plan: RequestPlan, fields: dict, stamps: dict) -> list[dict]:
        holds = []
        for name, modes in plan.rows.items():
            if not modes.get(HOLD):
                continue
            coll = self.system.collection(name)
            kept = sorted(f for f, s in fields[name][HOLD].items() if s == KEEP)
            for key in modes[HOLD]:
                start = _as_datetime(stamps.get((name, key)), self.now)
                until = add_period(start, coll.retention.period) if coll.retention else self.now
                holds.append(
                    {
                        "collection": name,
                        "row_key": str(key),
                        "retain_until": until.isoformat(),
                        "basis": coll.retention.basis if coll.retention else "legal obligation",
                        "fields_kept": kept,
                        "description": coll.description,
                    }
                )
        return holds
