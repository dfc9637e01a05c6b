"""Great Expectations checks of gathered results (GX core, ephemeral context, inside tasks).

For every staged collection of a system:

* ``expect_table_columns_to_match_set``: the data map's fields are all there;
* ``expect_column_values_to_be_in_set`` on ``_belongs_to_subject``: each row is linked to
  the subject by one of its identity or account-link fields (a partner that returns another
  subject's rows fails here). The column is a boolean computed from the identities, so GX
  reports never carry personal values;
* ``expect_table_row_count_to_equal``: the count matches what the ledger recorded.

Per system, ``expect_column_distinct_values_to_equal_set`` over the staged collection names
proves no collection went silently missing. ``CheckReport.reason`` is the readable failure.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from include.dsr.connectors.base import REQUEST_ID_COLUMN
from include.dsr.identity.resolver import link_keys

if TYPE_CHECKING:
    import pandas as pd

    from include.dsr.connectors.base import ExportResult
    from include.dsr.core.data_map import Collection, System
    from include.dsr.identity.resolver import ResolvedSubject

log = logging.getLogger(__name__)
BELONGS = "_belongs_to_subject"


@dataclass
class CheckOutcome:
    collection: str
    expectation: str
    success: bool
    unexpected_count: int | None = None
    element_count: int | None = None
    observed: object = None


@dataclass
class CheckReport:
    system: str
    outcomes: list[CheckOutcome] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def reason(self) -> str:
        failed = [o for o in self.outcomes if not o.success]
        parts = []
        for o in failed:
            if o.expectation == "expect_column_values_to_be_in_set":
                parts.append(
                    f"{self.system}.{o.collection}: {o.unexpected_count} of {o.element_count} rows do not "
                    "belong to the subject (wrong subject's data)"
                )
            elif o.expectation == "expect_table_row_count_to_equal":
                parts.append(f"{self.system}.{o.collection}: {o.observed} rows staged, ledger says otherwise")
            elif o.expectation == "expect_table_columns_to_match_set":
                parts.append(f"{self.system}.{o.collection}: required columns missing (has {o.observed})")
            else:
                parts.append(
                    f"{self.system}: collections differ from the data map, missing or unexpected (got {o.observed})"
                )
        return "; ".join(parts) or "all checks passed"

    def to_json(self) -> dict:
        return {
            "system": self.system,
            "success": self.success,
            "reason": self.reason,
            "outcomes": [o.__dict__ for o in self.outcomes],
        }


def belongs_to_subject(frame: pd.DataFrame, coll: Collection, subjects: dict[str, ResolvedSubject]) -> pd.Series:
    """Boolean per row: one of its identity / account-link fields holds its subject's identity."""
    import pandas as pd

    result = pd.Series(False, index=frame.index)
    for column, identity in link_keys(coll):
        if column not in frame.columns:
            continue
        values = frame[column]
        if identity == "email":
            values = values.astype("string").str.strip().str.lower()
        for request_id, subject in subjects.items():
            wanted = subject.identity_values(identity)
            if identity == "account_id":
                wanted = {str(v) for v in wanted}
                values = values.astype("string")
            mine = frame[REQUEST_ID_COLUMN] == request_id
            result |= mine & values.isin(list(wanted)).fillna(False).astype(bool)
    return result


class ResultChecker:
    """Validate one system's staged result against the data map, the subjects and the ledger."""

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.source = self.context.data_sources.add_pandas("dsr_results")
        self._assets = 0

    def _validate(self, frame: pd.DataFrame, expectations: list) -> list:
        self._assets += 1
        asset = self.source.add_dataframe_asset(name=f"asset_{self._assets}")
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": frame})
        suite = self.gx.ExpectationSuite(name=f"suite_{self._assets}")
        for expectation in expectations:
            suite.add_expectation(expectation)
        return batch.validate(suite).results

    def check(
        self,
        system: System,
        result: ExportResult,
        subjects: list[ResolvedSubject],
        expected_collections: list[Collection],
        ledger_counts: dict[str, int] | None = None,
        object_store: bool = False,
    ) -> CheckReport:
        import pandas as pd

        E = self.gx.expectations
        by_id = {s.request_id: s for s in subjects}
        report = CheckReport(system.key)
        names = pd.DataFrame({"collection": sorted(result.frames)})
        for res in self._validate(
            names,
            [
                E.ExpectColumnDistinctValuesToEqualSet(
                    column="collection", value_set=[c.name for c in expected_collections]
                )
            ],
        ):
            report.outcomes.append(
                CheckOutcome("*", res.expectation_config.type, res.success, observed=res.result.get("observed_value"))
            )
        for coll in expected_collections:
            frame = result.frames.get(coll.name)
            if frame is None:
                continue
            frame = frame.copy()
            required = (
                ["object_key", "sha256", REQUEST_ID_COLUMN] if object_store else [*coll.field_names, REQUEST_ID_COLUMN]
            )
            expectations = [E.ExpectTableColumnsToMatchSet(column_set=required, exact_match=False)]
            if not object_store:
                frame[BELONGS] = belongs_to_subject(frame, coll, by_id)
                expectations.append(E.ExpectColumnValuesToBeInSet(column=BELONGS, value_set=[True]))
            else:
                expectations.append(E.ExpectColumnValuesToNotBeNull(column="sha256"))
            if ledger_counts is not None:
                expectations.append(E.ExpectTableRowCountToEqual(value=int(ledger_counts.get(coll.name, -1))))
            for res in self._validate(frame, expectations):
                report.outcomes.append(
                    CheckOutcome(
                        coll.name,
                        res.expectation_config.type,
                        res.success,
                        unexpected_count=res.result.get("unexpected_count"),
                        element_count=res.result.get("element_count"),
                        observed=_safe_observed(res.result.get("observed_value")),
                    )
                )
        log.info("checked %s: %s expectations, success=%s", system.key, len(report.outcomes), report.success)
        return report


def _safe_observed(value):
    """Observed values are counts or column names, never row values; keep them small."""
    if isinstance(value, list):
        return [str(v) for v in value][:50]
    return value
