"""Great Expectations checks of gathered results (GX core, ephemeral context, inside tasks).

Every expectation compares the staged result with something the staging did not produce:

* per unit, ``expect_column_distinct_values_to_equal_set`` over the collections **the source
  returned** (a partner's answer before it was padded to the data map) against the
  collections the data map expects: a collection missing from the answer, or one the data
  map does not know, fails;
* per collection, ``expect_table_columns_to_match_set`` over the columns **the source returned**
  (the database cursor's, the keys of a partner's rows) against the data map's fields;
* ``expect_column_values_to_be_in_set`` on ``_belongs_to_subject``: each row is linked to its
  subject by an identity or account-link field, compared with the exact, typed rules of
  :mod:`include.dsr.identity.matching` (an id read back as ``12.0`` is ``12``). The column is
  a boolean, so GX reports never carry personal values;
* ``expect_column_unique_value_count_to_be_between`` on the primary key, against **the
  source's own count** of the subjects' rows (a separate count query): a row lost or
  duplicated on the way fails;
* for partners, ``expect_column_pair_values_to_be_equal`` over every answer: the rows a table
  holds against the count the partner reported for it (``affected``): a partner that adds
  rows, or drops them, fails.

For the object store the rows are objects: each staged key must be one the subject's rows
reference and carry a checksum, and their number must equal the number of keys referenced.
``CheckReport.reason`` is the readable failure.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.dsr.connectors.base import REQUEST_ID_COLUMN
from include.dsr.identity.matching import link_columns

if TYPE_CHECKING:
    import pandas as pd

    from include.dsr.connectors.base import ExportResult
    from include.dsr.core.data_map import Collection, System
    from include.dsr.identity.resolver import ResolvedSubject

log = logging.getLogger(__name__)
BELONGS = "_belongs_to_subject"
COLLECTIONS = "expect_column_distinct_values_to_equal_set"
COLUMNS = "expect_table_columns_to_match_set"
IN_SET = "expect_column_values_to_be_in_set"
COUNT = "expect_column_unique_value_count_to_be_between"
NOT_NULL = "expect_column_values_to_not_be_null"
PAIR = "expect_column_pair_values_to_be_equal"
PARTNER_CHANNELS = ("api", "s3_dropbox")


@dataclass
class CheckOutcome:
    collection: str
    expectation: str
    success: bool
    unexpected_count: int | None = None
    element_count: int | None = None
    observed: object = None
    expected: object = None


@dataclass
class CheckReport:
    system: str
    outcomes: list[CheckOutcome] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return bool(self.outcomes) and all(o.success for o in self.outcomes)

    @property
    def reason(self) -> str:
        if not self.outcomes:
            return f"{self.system}: nothing was checked"
        parts = [self._explain(o) for o in self.outcomes if not o.success]
        return "; ".join(parts) or "all checks passed"

    def _explain(self, o: CheckOutcome) -> str:
        where = f"{self.system}.{o.collection}"
        if o.expectation == IN_SET and o.collection.endswith("(objects)"):
            return f"{where}: {o.unexpected_count} staged objects are not referenced by the subject's rows"
        if o.expectation == IN_SET:
            return (
                f"{where}: {o.unexpected_count} of {o.element_count} rows do not belong to the subject "
                "(wrong subject's data)"
            )
        if o.expectation == COUNT:
            return f"{where}: {o.observed} distinct rows staged, the source counted {o.expected}"
        if o.expectation == COLUMNS:
            return f"{where}: the source returned columns {o.observed}, missing some of {o.expected}"
        if o.expectation == PAIR:
            return (
                f"{self.system}: in {o.unexpected_count} of {o.element_count} answers the partner's rows and "
                "its own reported count disagree"
            )
        if o.expectation == NOT_NULL:
            return f"{where}: {o.unexpected_count} staged objects have no checksum"
        return (
            f"{self.system}: the source returned collections {o.observed}, the data map expects {o.expected} "
            "(missing or unexpected)"
        )

    def to_json(self) -> dict:
        return {
            "system": self.system,
            "success": self.success,
            "reason": self.reason,
            "outcomes": [o.__dict__ for o in self.outcomes],
        }


def belongs_to_subject(frame: pd.DataFrame, coll: Collection, subjects: dict[str, ResolvedSubject]) -> pd.Series:
    """Boolean per row: one of its link fields holds an identity of the subject named in ``_request_id``."""
    import pandas as pd

    columns = [c for c in link_columns(coll) if c.name in frame.columns]
    result = []
    for _, row in frame.iterrows():
        subject = subjects.get(str(row[REQUEST_ID_COLUMN]))
        mine = False
        if subject is not None:
            for column in columns:
                value = column.identity_of(None if pd.isna(row[column.name]) else row[column.name])
                if value is not None and value in subject.identity_values(column.identity):
                    mine = True
                    break
        result.append(mine)
    return pd.Series(result, index=frame.index, dtype=bool)


class ResultChecker:
    """Validate one unit's staged result against the data map, the subjects and the source's own figures."""

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

    def _record(self, report: CheckReport, collection: str, results: list, expected: dict[str, Any]) -> None:
        for res in results:
            kind = res.expectation_config.type
            report.outcomes.append(
                CheckOutcome(
                    collection,
                    kind,
                    res.success,
                    unexpected_count=res.result.get("unexpected_count"),
                    element_count=res.result.get("element_count"),
                    observed=_safe_observed(res.result.get("observed_value")),
                    expected=expected.get(kind),
                )
            )

    def check(
        self,
        system: System,
        result: ExportResult,
        subjects: list[ResolvedSubject],
        expected_collections: list[Collection],
        object_store: bool = False,
    ) -> CheckReport:
        """Check one staged unit.

        :param result: the staged result, with what the source returned (``returned_collections``,
            ``returned_columns``), counted (``source_counts``, a partner's ``answer_counts``) and,
            for objects, referenced (``referenced_keys``)
        """
        import pandas as pd

        E = self.gx.expectations
        by_id = {s.request_id: s for s in subjects}
        report = CheckReport(system.key)
        partner = system.channel in PARTNER_CHANNELS
        # A partner answers with everything it holds; an internal unit returns what it was asked for.
        wanted = sorted(c.name for c in (system.collections if partner else expected_collections) if c.personal)
        returned = pd.DataFrame({"collection": sorted(result.returned_collections)}, dtype="string")
        self._record(
            report,
            "*",
            self._validate(returned, [E.ExpectColumnDistinctValuesToEqualSet(column="collection", value_set=wanted)]),
            {COLLECTIONS: wanted},
        )
        if partner:
            self._check_answers(report, result)
        for coll in expected_collections:
            frame = result.frames.get(coll.name)
            if frame is None:
                continue
            if object_store:
                self._check_objects(report, coll, frame, set(result.referenced_keys.get(coll.name, [])))
            else:
                self._check_rows(report, coll, frame, result, by_id, count_from_source=not partner)
        log.info("checked %s: %s expectations, success=%s", system.key, len(report.outcomes), report.success)
        return report

    def _check_answers(self, report: CheckReport, result: ExportResult) -> None:
        """Each partner answer's rows per table against the count the partner reported in it."""
        import pandas as pd

        if not result.answer_counts:
            return
        answers = pd.DataFrame.from_records(
            result.answer_counts, columns=["answer", "collection", "returned", "reported"]
        )
        answers["reported"] = answers["reported"].astype("Int64")
        answers["returned"] = answers["returned"].astype("Int64")
        results = self._validate(
            answers, [self.gx.expectations.ExpectColumnPairValuesToBeEqual(column_A="returned", column_B="reported")]
        )
        self._record(report, "answers", results, {})

    def _check_rows(
        self,
        report: CheckReport,
        coll: Collection,
        frame: pd.DataFrame,
        result: ExportResult,
        subjects: dict[str, ResolvedSubject],
        count_from_source: bool = True,
    ) -> None:
        import pandas as pd

        E = self.gx.expectations
        returned = result.returned_columns.get(coll.name)
        if returned:  # a partner that returned no rows shows no columns: nothing to compare
            self._record(
                report,
                coll.name,
                self._validate(
                    pd.DataFrame(columns=returned),
                    [E.ExpectTableColumnsToMatchSet(column_set=coll.field_names, exact_match=False)],
                ),
                {COLUMNS: coll.field_names},
            )
        checked = frame.copy()
        checked[BELONGS] = belongs_to_subject(checked, coll, subjects)
        expectations = [E.ExpectColumnValuesToBeInSet(column=BELONGS, value_set=[True])]
        source = result.source_counts.get(coll.name)
        expected: dict[str, Any] = {}
        if not count_from_source:
            pass  # a partner's counts are checked per answer (_check_answers)
        elif source is None:
            report.outcomes.append(CheckOutcome(coll.name, COUNT, False, observed=len(frame), expected="no count"))
        elif coll.primary_key in checked.columns:
            checked["_row_key"] = checked[coll.primary_key].astype("string")
            expectations.append(
                E.ExpectColumnUniqueValueCountToBeBetween(
                    column="_row_key", min_value=int(source), max_value=int(source)
                )
            )
            expected[COUNT] = int(source)
        self._record(report, coll.name, self._validate(checked, expectations), expected)

    def _check_objects(self, report: CheckReport, coll: Collection, frame: pd.DataFrame, referenced: set[str]) -> None:
        E = self.gx.expectations
        checked = frame.copy()
        checked["_object_key"] = checked["object_key"].astype("string")
        expectations = [
            E.ExpectColumnValuesToNotBeNull(column="sha256"),
            E.ExpectColumnValuesToBeInSet(column="_object_key", value_set=sorted(referenced)),
            E.ExpectColumnUniqueValueCountToBeBetween(
                column="_object_key", min_value=len(referenced), max_value=len(referenced)
            ),
        ]
        self._record(report, f"{coll.name}(objects)", self._validate(checked, expectations), {COUNT: len(referenced)})


def _safe_observed(value):
    """Observed values are counts or column names, never row values; keep them small."""
    if isinstance(value, list):
        return [str(v) for v in value][:50]
    return value
