"""Every Great Expectations check of a gathered result, with an input that must pass and one that must fail.

The inputs are built by hand (no connector): what the source returned (collections, columns,
counts, a partner's answers, referenced object keys) beside the staged frames, so each
expectation is shown to compare two independent things.
"""

from __future__ import annotations

import pandas as pd
import pytest

from include.dsr.checks.results import COLLECTIONS, COLUMNS, COUNT, IN_SET, NOT_NULL, PAIR, UNIQUE, ResultChecker
from include.dsr.connectors.base import REQUEST_ID_COLUMN, ExportResult
from include.dsr.core.data_map import load_data_map
from include.dsr.identity.resolver import ResolvedSubject

SUBJECT = ResolvedSubject("R1", emails={"maria.lopez@example.com"}, account_ids={7})


@pytest.fixture(scope="module")
def checker() -> ResultChecker:
    return ResultChecker()


@pytest.fixture(scope="module")
def data_map():
    return load_data_map()


def _tickets(rows: list[dict]) -> pd.DataFrame:
    columns = ["id", "account_id", "contact_email", "subject", "body", "created_at", "status"]
    return pd.DataFrame([{c: row.get(c) for c in columns} | {REQUEST_ID_COLUMN: "R1"} for row in rows])


def _internal(frame: pd.DataFrame, **changes) -> ExportResult:
    result = ExportResult(
        "fabconnect_app",
        frames={"support_tickets": frame},
        returned_collections=["support_tickets"],
        returned_columns={"support_tickets": [c for c in frame.columns if c != REQUEST_ID_COLUMN]},
        source_counts={"support_tickets": int(frame["id"].nunique())},
    )
    for key, value in changes.items():
        setattr(result, key, value)
    return result


def _check(checker, data_map, result, system="fabconnect_app", collections=("support_tickets",), objects=False):
    system = data_map.system(system)
    return checker.check(system, result, [SUBJECT], [system.collection(c) for c in collections], object_store=objects)


def _failed(report) -> set[str]:
    return {o.expectation for o in report.outcomes if not o.success}


GOOD_ROWS = [
    {"id": 1, "account_id": 7.0, "contact_email": "x@example.org"},  # linked by account (read as float)
    {"id": 2, "account_id": None, "contact_email": " Maria.Lopez@Example.COM "},
]


def test_a_correct_internal_result_passes_every_check(checker, data_map):
    report = _check(checker, data_map, _internal(_tickets(GOOD_ROWS)))
    assert report.success, report.reason
    assert {o.expectation for o in report.outcomes} == {COLLECTIONS, COLUMNS, IN_SET, COUNT, UNIQUE}


def test_a_collection_the_source_did_not_return_fails(checker, data_map):
    report = _check(checker, data_map, _internal(_tickets(GOOD_ROWS), returned_collections=[]))
    assert _failed(report) == {COLLECTIONS}
    assert "data map expects" in report.reason


def test_a_collection_the_data_map_does_not_know_fails(checker, data_map):
    result = _internal(_tickets(GOOD_ROWS), returned_collections=["support_tickets", "secret_notes"])
    assert _failed(_check(checker, data_map, result)) == {COLLECTIONS}


def test_a_column_the_source_did_not_return_fails(checker, data_map):
    result = _internal(_tickets(GOOD_ROWS), returned_columns={"support_tickets": ["id", "account_id"]})
    report = _check(checker, data_map, result)
    assert _failed(report) == {COLUMNS}
    assert "differ from the data map's" in report.reason


def test_a_column_the_data_map_does_not_list_fails(checker, data_map):
    """A table that grew a column nobody mapped (the source's columns are reflected)."""
    columns = ["id", "account_id", "contact_email", "subject", "body", "created_at", "status", "agent_notes"]
    result = _internal(_tickets(GOOD_ROWS), returned_columns={"support_tickets": columns})
    assert _failed(_check(checker, data_map, result)) == {COLUMNS}


def test_a_row_of_another_subject_fails(checker, data_map):
    rows = [*GOOD_ROWS, {"id": 3, "account_id": 8, "contact_email": "someone.else@example.com"}]
    report = _check(checker, data_map, _internal(_tickets(rows)))
    assert _failed(report) == {IN_SET}
    assert "1 of 3 rows do not belong" in report.reason


def test_an_id_read_back_as_text_or_float_still_belongs(checker, data_map):
    rows = [{"id": 1, "account_id": "7", "contact_email": None}, {"id": 2, "account_id": 7.0, "contact_email": None}]
    assert _check(checker, data_map, _internal(_tickets(rows))).success


def test_a_row_lost_on_the_way_fails_against_the_source_count(checker, data_map):
    result = _internal(_tickets(GOOD_ROWS[:1]), source_counts={"support_tickets": 2})
    report = _check(checker, data_map, result)
    assert _failed(report) == {COUNT}
    assert "the source counted 2" in report.reason


def test_a_row_staged_twice_for_one_request_fails(checker, data_map):
    result = _internal(_tickets([GOOD_ROWS[0], GOOD_ROWS[0]]), source_counts={"support_tickets": 1})
    report = _check(checker, data_map, result)
    assert _failed(report) == {UNIQUE}
    assert "staged more than once" in report.reason


def test_a_collection_without_its_primary_key_fails(checker, data_map):
    result = _internal(_tickets(GOOD_ROWS))
    result.frames = {"support_tickets": _tickets(GOOD_ROWS).drop(columns=["id"])}
    report = _check(checker, data_map, result)
    assert COUNT in _failed(report)
    assert "no primary key" in str([o.observed for o in report.outcomes])


def test_no_count_from_the_source_fails(checker, data_map):
    assert _failed(_check(checker, data_map, _internal(_tickets(GOOD_ROWS), source_counts={}))) == {COUNT}


def _partner(rows: list[dict], answers: list[dict], tables: list[str] | None = None) -> ExportResult:
    system = load_data_map().system("payflow")
    frames = {}
    for coll in system.collections:
        mine = [r for r in rows if r["_table"] == coll.name]
        frames[coll.name] = pd.DataFrame(
            [{f: r.get(f) for f in coll.field_names} | {REQUEST_ID_COLUMN: "R1"} for r in mine],
            columns=[*coll.field_names, REQUEST_ID_COLUMN],
        )
    return ExportResult(
        "payflow",
        frames=frames,
        answer_counts=answers,
        returned_collections=tables if tables is not None else [c.name for c in system.collections],
        returned_columns={"customers": ["id", "email", "phone", "name", "company"]},
    )


PARTNER_ROWS = [{"_table": "customers", "id": 1, "email": "maria.lopez@example.com"}]


def _answers(customers_reported: int | None) -> list[dict]:
    return [
        {"answer": "ref-1", "collection": "customers", "returned": 1, "reported": customers_reported},
        {"answer": "ref-1", "collection": "cards", "returned": 0, "reported": 0},
        {"answer": "ref-1", "collection": "charges", "returned": 0, "reported": 0},
    ]


def test_a_partner_whose_rows_match_its_count_passes(checker, data_map):
    result = _partner(PARTNER_ROWS, _answers(1))
    report = _check(checker, data_map, result, system="payflow", collections=("customers", "cards", "charges"))
    assert report.success, report.reason
    assert PAIR in {o.expectation for o in report.outcomes}


@pytest.mark.parametrize(
    "reported",
    [
        pytest.param(0, id="more rows than it counted (it added some)"),
        pytest.param(2, id="fewer rows than it counted"),
        pytest.param(None, id="no count at all"),
    ],
)
def test_a_partner_whose_rows_and_count_disagree_fails(checker, data_map, reported):
    result = _partner(PARTNER_ROWS, _answers(reported))
    report = _check(checker, data_map, result, system="payflow", collections=("customers", "cards", "charges"))
    assert _failed(report) == {PAIR}
    assert "its own reported count disagree" in report.reason


def test_a_partner_may_leave_out_a_table_it_holds_nothing_in(checker, data_map):
    result = _partner(PARTNER_ROWS, _answers(1)[:1], tables=["customers"])
    report = _check(checker, data_map, result, system="payflow", collections=("customers", "cards", "charges"))
    assert report.success, report.reason


def test_a_partner_answering_with_a_table_the_data_map_does_not_know_fails(checker, data_map):
    result = _partner(PARTNER_ROWS, _answers(1), tables=["customers", "cards", "charges", "risk_scores"])
    report = _check(checker, data_map, result, system="payflow", collections=("customers", "cards", "charges"))
    assert _failed(report) == {COLLECTIONS}


def test_a_partner_sending_a_column_it_did_not_agree_to_fails(checker, data_map):
    result = _partner(PARTNER_ROWS, _answers(1))
    result.returned_columns = {"customers": ["id", "email", "phone", "name", "company", "date_of_birth"]}
    report = _check(checker, data_map, result, system="payflow", collections=("customers", "cards", "charges"))
    assert _failed(report) == {COLUMNS}


def _objects(keys: list[str], sha: list[str | None], referenced: list[str]) -> ExportResult:
    frame = pd.DataFrame(
        {
            "object_key": keys,
            "size_bytes": [10] * len(keys),
            "sha256": sha,
            "staged_key": [f"_staging/R1/files/{k}" for k in keys],
            REQUEST_ID_COLUMN: ["R1"] * len(keys),
        }
    )
    return ExportResult(
        "fabconnect_s3", frames={"specs": frame}, returned_collections=["specs"], referenced_keys={"specs": referenced}
    )


@pytest.mark.parametrize(
    ("keys", "sha", "referenced", "failed"),
    [
        pytest.param(["specs/1/a.step"], ["ab" * 32], ["specs/1/a.step"], set(), id="the objects the rows name"),
        pytest.param(["specs/1/a.step"], [None], ["specs/1/a.step"], {NOT_NULL}, id="an object without checksum"),
        pytest.param(
            ["specs/9/b.step"],
            ["ab" * 32],
            ["specs/1/a.step"],
            {IN_SET},
            id="an object no row of the subject names",
        ),
        pytest.param(
            ["specs/1/a.step"], ["ab" * 32], ["specs/1/a.step", "specs/2/c.step"], {COUNT}, id="an object missing"
        ),
    ],
)
def test_object_checks(checker, data_map, keys, sha, referenced, failed):
    report = _check(
        checker, data_map, _objects(keys, sha, referenced), system="fabconnect_s3", collections=("specs",), objects=True
    )
    assert _failed(report) == failed, report.reason
