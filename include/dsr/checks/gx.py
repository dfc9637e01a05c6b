"""Great Expectations core in an ephemeral context: validate a small frame against a few expectations.

Every check of the product runs through :class:`GxRunner` (one context per task, GX imported
when it is built, never at DAG parse time). Results become :class:`CheckOutcome` rows: the
expectation, success, counts and the observed value (counts or names, never row values).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class CheckOutcome:
    collection: str
    expectation: str
    success: bool
    unexpected_count: int | None = None
    element_count: int | None = None
    observed: object = None
    expected: object = None


class GxRunner:
    """An ephemeral GX context with a pandas data source; :meth:`validate` runs one suite on one frame."""

    def __init__(self, source_name: str = "dsr_checks") -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.E = gx.expectations
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.source = self.context.data_sources.add_pandas(source_name)
        self._assets = 0

    def validate(self, frame: pd.DataFrame, expectations: list, result_format: dict | None = None) -> list:
        self._assets += 1
        asset = self.source.add_dataframe_asset(name=f"asset_{self._assets}")
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": frame})
        suite = self.gx.ExpectationSuite(name=f"suite_{self._assets}")
        for expectation in expectations:
            suite.add_expectation(expectation)
        if result_format is None:
            return batch.validate(suite).results
        return batch.validate(suite, result_format=result_format).results

    def validate_per(
        self, frame: pd.DataFrame, expectations: list, column: str
    ) -> list[tuple[Any, dict[str, int], dict[str, int]]]:
        """Validate a frame holding many requests once; per result, the unexpected rows and all
        rows counted per value of ``column`` (the request id). Unexpected *values* are dropped
        here: they can be personal data."""
        rows = {str(k): int(v) for k, v in frame[column].value_counts().items()} if len(frame) else {}
        result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": [column]}
        found = []
        for res in self.validate(frame, expectations, result_format):
            unexpected: dict[str, int] = {}
            for item in res.result.get("unexpected_index_list") or []:
                key = str(item.get(column)) if isinstance(item, dict) else str(frame.loc[item, column])
                unexpected[key] = unexpected.get(key, 0) + 1
            found.append((res, unexpected, rows))
        return found

    def outcomes(
        self, collection: str, frame: pd.DataFrame, expectations: list, expected: dict[str, Any] | None = None
    ) -> list[CheckOutcome]:
        """Validate and turn each result into a :class:`CheckOutcome` (``expected`` per expectation type)."""
        found = []
        for res in self.validate(frame, expectations):
            kind = res.expectation_config.type
            found.append(
                CheckOutcome(
                    collection,
                    kind,
                    res.success,
                    unexpected_count=res.result.get("unexpected_count"),
                    element_count=res.result.get("element_count"),
                    observed=safe_observed(res.result.get("observed_value")),
                    expected=(expected or {}).get(kind),
                )
            )
        return found


def safe_observed(value):
    """Observed values are counts or column names, never row values; keep them small."""
    if isinstance(value, list):
        return [str(v) for v in value][:50]
    return value
