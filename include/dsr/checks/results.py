"""Great Expectations checks of gathered results (GX core, ephemeral context, inside tasks).

Every expectation compares the staged result with something the staging did not produce:

* per unit, ``expect_column_distinct_values_to_equal_set`` over the collections **the source
  returned** (a partner's answer before it was padded to the data map) against the
  collections the data map expects: for an internal unit a missing or unknown collection fails;
  a partner may leave out a table it holds nothing in, never add one the data map does not know;
* per collection, ``expect_table_columns_to_match_set`` (exact) over the columns **the source
  has** (the table's, reflected from the database; the keys of a partner's rows) against the
  data map's fields: a column nobody mapped fails, and so does one the source lost;
* ``expect_column_values_to_be_in_set`` on ``_belongs_to_subject``: each row is linked to its
  subject by an identity or account-link field, compared with the exact, typed rules of
  :mod:`include.dsr.identity.matching` (an id read back as ``12.0`` is ``12``). The column is
  a boolean, so GX reports never carry personal values;
* ``expect_column_unique_value_count_to_be_between`` on the primary key, against **the
  source's own count** of the subjects' rows (a separate count query, same snapshot): a row lost
  on the way fails, and ``expect_compound_columns_to_be_unique`` on (key, request) one staged twice;
* for partners, ``expect_column_pair_values_to_be_equal`` over every answer: the rows a table
  holds against the count the partner reported for it (``affected``): a partner that adds
  rows, or drops them, fails.

For the object store the rows are objects: each staged key must be one the subject's rows
reference and carry a checksum, and their number must equal the number of keys referenced.
``CheckReport.reason`` is the readable failure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.dsr.checks.gx import CheckOutcome, GxRunner, safe_observed
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
UNIQUE = "expect_compound_columns_to_be_unique"
PARTNER_CHANNELS = ("api", "s3_dropbox")


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
            return f"{where}: the source's columns {o.observed} differ from the data map's {o.expected}"
        if o.expectation == UNIQUE:
            return f"{where}: {o.unexpected_count} rows staged more than once for one request"
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


class ResultChecker(GxRunner):
    """Validate one unit's staged result against the data map, the subjects and the source's own figures."""

    def __init__(self) -> None:
        super().__init__("dsr_results")

    def _validate(self, frame: pd.DataFrame, expectations: list) -> list:
        return self.validate(frame, expectations)

    def _record(
        self, report: CheckReport, collection: str, results: list, expected: dict[str, Any], kind: str | None = None
    ) -> None:
        for res in results:
            recorded = kind or res.expectation_config.type
            report.outcomes.append(
                CheckOutcome(
                    collection,
                    recorded,
                    res.success,
                    unexpected_count=res.result.get("unexpected_count"),
                    element_count=res.result.get("element_count"),
                    observed=safe_observed(res.result.get("observed_value")),
                    expected=expected.get(recorded),
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
        # An internal unit is asked for each collection and returns each; a partner may leave out a
        # table it holds nothing in, but never answers with one the data map does not know.
        collections_check = (
            E.ExpectColumnValuesToBeInSet(column="collection", value_set=wanted)
            if partner
            else E.ExpectColumnDistinctValuesToEqualSet(column="collection", value_set=wanted)
        )
        # recorded under one kind whichever expectation ran: one explanation in the report
        self._record(report, "*", self._validate(returned, [collections_check]), {COLLECTIONS: wanted}, COLLECTIONS)
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
            # Exact: a column the data map does not list (a table changed under it, a partner
            # sending more than agreed) is personal data no one mapped.
            self._record(
                report,
                coll.name,
                self._validate(
                    pd.DataFrame(columns=returned),
                    [E.ExpectTableColumnsToMatchSet(column_set=coll.field_names, exact_match=True)],
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
            expectations += [
                E.ExpectColumnUniqueValueCountToBeBetween(
                    column="_row_key", min_value=int(source), max_value=int(source)
                ),
                # a row staged twice for one request would not change the distinct count
                E.ExpectCompoundColumnsToBeUnique(column_list=["_row_key", REQUEST_ID_COLUMN]),
            ]
            expected[COUNT] = int(source)
        else:
            report.outcomes.append(
                CheckOutcome(coll.name, COUNT, False, observed="no primary key", expected=int(source))
            )
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
