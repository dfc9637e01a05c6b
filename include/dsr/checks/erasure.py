"""Great Expectations checks after an erasure: what is left is exactly what the plan kept, as stripped as planned.

Every expectation runs once over the whole batch (one request, or a wave of thousands) and its
result is split per request; each compares the systems as they are now with the plan staged
before anything was touched:

* per collection, the rows the subject's identities still find (account ids included, so an
  anonymised account is found) are ``expect_column_values_to_be_in_set`` the planned survivors
  (held and anonymised rows): a row erasure missed fails;
* every row planned for deletion is gone (``still_there`` in ``{False}``): counts erased equal the plan;
* on every surviving row, each field planned empty is NULL and each field planned hashed holds a
  keyed hash (``expect_column_values_to_be_null`` / ``..._to_match_regex``): held rows contain only
  their allowed fields;
* every object the plan named, and every earlier package, has no version left;
* every email of the subject is on the suppression list.

The report (expectations, counts, names; never values) is stored as evidence.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.dsr.checks.gx import CheckOutcome, GxRunner
from include.dsr.connectors.base import REQUEST_ID_COLUMN as REQUEST
from include.dsr.connectors.sql_erasure import HASH_PREFIX
from include.dsr.core.erasure_terms import ANONYMISE, DELETE, HASH, HOLD, NULL

if TYPE_CHECKING:
    from include.dsr.connectors.object_store import ObjectStoreConnector
    from include.dsr.connectors.sql_database import SqlDatabaseConnector
    from include.dsr.core.data_map import DataMap
    from include.dsr.identity.resolver import ResolvedSubject

log = logging.getLogger(__name__)
HASHED = f"^{HASH_PREFIX}[0-9a-f]{{64}}$"


@dataclass
class ErasureReport:
    """One request's part of a batch's checks: the outcome of every expectation that saw its rows."""

    request_id: str
    outcomes: list[CheckOutcome] = field(default_factory=list)
    expectations_run: int = 0  # over the whole batch, this request's rows among them

    @property
    def success(self) -> bool:
        return self.expectations_run > 0 and all(o.success for o in self.outcomes)

    @property
    def failure_count(self) -> int:
        return sum(not o.success for o in self.outcomes)

    @property
    def reason(self) -> str:
        if not self.expectations_run:
            return "nothing was checked"
        failed = [
            f"{o.collection}: {o.expectation} ({o.unexpected_count} unexpected)" for o in self.outcomes if not o.success
        ]
        return "; ".join(failed) or "all checks passed"

    def to_json(self) -> dict:
        return {
            "request_id": self.request_id,
            "success": self.success,
            "reason": self.reason,
            "expectations_run": self.expectations_run,
            "outcomes": [o.__dict__ for o in self.outcomes],
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), default=str, indent=1).encode()


class ErasureChecker(GxRunner):
    """Set-based: each expectation runs once over the rows of the whole batch, and its result is
    split per request (GX's unexpected rows carry the request id; their values are dropped)."""

    def __init__(
        self,
        data_map: DataMap,
        database: SqlDatabaseConnector,
        objects: ObjectStoreConnector | None,
        s3: Any,
        exports_bucket: str,
        hash_secret: str,
    ) -> None:
        super().__init__("dsr_erasure")
        self.data_map, self.database, self.objects = data_map, database, objects
        self.s3, self.exports_bucket, self.hash_secret = s3, exports_bucket, hash_secret

    def check(self, subject: ResolvedSubject, plan: Any) -> ErasureReport:
        return self.check_batch([subject], plan)[subject.request_id]

    def check_batch(self, subjects: list[ResolvedSubject], plan: Any) -> dict[str, ErasureReport]:
        import pandas as pd

        E = self.E
        reports = {s.request_id: ErasureReport(s.request_id) for s in subjects}
        system = self.data_map.system("fabconnect_app")
        collections = [c for c in system.collections if c.personal]
        left = self.database.rows_of(subjects, collections)
        for coll in collections:
            survivors = {
                rid: {
                    str(k)
                    for mode in (ANONYMISE, HOLD)
                    for k in plan.requests[rid].rows.get(coll.name, {}).get(mode, [])
                }
                for rid in reports
            }
            if coll.name != plan.suppression_collection:  # the erasure itself adds entries there
                rows = left.get(coll.name, [])
                remaining = pd.DataFrame(
                    {
                        REQUEST: [r[REQUEST] for r in rows],
                        "planned_to_survive": [str(r[coll.primary_key]) in survivors[r[REQUEST]] for r in rows],
                    }
                )
                self._record(
                    reports,
                    coll.name,
                    remaining,
                    [E.ExpectColumnValuesToBeInSet(column="planned_to_survive", value_set=[True])],
                )
            deleted = [(rid, k) for rid in reports for k in plan.requests[rid].rows.get(coll.name, {}).get(DELETE, [])]
            if deleted:
                present = {
                    str(r[coll.primary_key]) for r in self.database.rows_by_key(coll.name, [k for _, k in deleted], [])
                }
                gone = pd.DataFrame(
                    {REQUEST: [rid for rid, _ in deleted], "still_there": [str(k) in present for _, k in deleted]}
                )
                self._record(
                    reports,
                    f"{coll.name} (deleted)",
                    gone,
                    [E.ExpectColumnValuesToBeInSet(column="still_there", value_set=[False])],
                )
            self._stripped(reports, coll, plan)
        self._objects(reports, plan)
        self._suppressed(reports, subjects, plan)
        failed = sum(not r.success for r in reports.values())
        log.info("erasure of %s requests checked: %s failed", len(reports), failed)
        return reports

    def _record(self, reports: dict[str, ErasureReport], collection: str, frame, expectations: list) -> None:
        """Run ``expectations`` once over the batch's frame and give each request its share."""
        if not len(frame):
            return
        for res, unexpected, rows in self.validate_per(frame, expectations, REQUEST):
            kind = res.expectation_config.type
            for rid, report in reports.items():
                if rid not in rows and rid not in unexpected:
                    continue
                report.expectations_run += 1
                report.outcomes.append(
                    CheckOutcome(
                        collection,
                        kind,
                        unexpected.get(rid, 0) == 0,
                        unexpected_count=unexpected.get(rid, 0),
                        element_count=rows.get(rid, 0),
                    )
                )

    def _stripped(self, reports: dict[str, ErasureReport], coll, plan: Any) -> None:
        """Each surviving row holds only what the plan let it keep."""
        import pandas as pd

        fields = plan.fields.get(coll.name, {})
        for mode in (ANONYMISE, HOLD):
            strategies = {f: s for f, s in fields.get(mode, {}).items() if s in (NULL, HASH)}
            owners = {str(k): rid for rid in reports for k in plan.requests[rid].rows.get(coll.name, {}).get(mode, [])}
            if not owners or not strategies:
                continue
            frame = pd.DataFrame(self.database.rows_by_key(coll.name, list(owners), sorted(strategies)))
            frame[REQUEST] = [owners[str(k)] for k in frame[coll.primary_key]] if len(frame) else []
            expectations = []
            for name, strategy in sorted(strategies.items()):
                frame[name] = frame[name].astype("string") if name in frame else pd.Series(dtype="string")
                if strategy == NULL:
                    expectations.append(self.E.ExpectColumnValuesToBeNull(column=name))
                else:
                    expectations.append(self.E.ExpectColumnValuesToMatchRegex(column=name, regex=HASHED))
            self._record(reports, f"{coll.name} ({mode})", frame[[REQUEST, *sorted(strategies)]], expectations)

    def _objects(self, reports: dict[str, ErasureReport], plan: Any) -> None:
        import pandas as pd

        from include.dsr.connectors.object_store import versions_left

        wanted = {rid: sorted({k for ks in plan.requests[rid].objects.values() for k in ks}) for rid in reports}
        left = (
            versions_left(self.objects.s3, self.objects.bucket, sorted({k for ks in wanted.values() for k in ks}))
            if self.objects
            else {}
        )
        records = [(rid, left.get(k, 0)) for rid, keys in wanted.items() for k in keys]
        for rid in reports:
            for earlier in plan.requests[rid].own_copies:
                for prefix in (f"{earlier}/", f"_staging/{earlier}/", f"_keys/{earlier}.txt"):
                    records.append((rid, sum(versions_left(self.s3, self.exports_bucket, prefix=prefix).values())))
        frame = pd.DataFrame({REQUEST: [r for r, _ in records], "versions_left": [n for _, n in records]})
        frame["versions_left"] = frame["versions_left"].astype("Int64")
        self._record(
            reports,
            "objects and earlier packages",
            frame,
            [self.E.ExpectColumnValuesToBeInSet(column="versions_left", value_set=[0])],
        )

    def _suppressed(self, reports: dict[str, ErasureReport], subjects: list[ResolvedSubject], plan: Any) -> None:
        import pandas as pd
        from sqlalchemy import column, select, table

        from include.dsr.core.pii import keyed_hash
        from include.dsr.identity.matching import chunks

        if not plan.suppression_collection:
            return
        wanted = [(s.request_id, keyed_hash(e, self.hash_secret)) for s in subjects for e in sorted(s.emails)]
        if not wanted:
            return
        coll = self.data_map.system("fabconnect_app").collection(plan.suppression_collection)
        hash_field = next(f.name for f in coll.fields if f.identity == "email_hash")
        t = table(coll.name, column(hash_field))
        present: set[str] = set()
        with self.database.engine.connect() as conn:
            for part in chunks({h for _, h in wanted}):
                present |= {r[0] for r in conn.execute(select(t.c[hash_field]).where(t.c[hash_field].in_(part)))}
        frame = pd.DataFrame({REQUEST: [r for r, _ in wanted], "suppressed": [h in present for _, h in wanted]})
        self._record(
            reports, coll.name, frame, [self.E.ExpectColumnValuesToBeInSet(column="suppressed", value_set=[True])]
        )
