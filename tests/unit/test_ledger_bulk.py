"""The ledger's many-rows-at-once writes (waves) do exactly what the one-row writes do.

The same sequence of updates goes once through ``upsert_system_result`` / ``append_event`` and
once through ``upsert_system_results`` / ``append_events`` into two ledgers; rows (but their
timestamps) and events (types, payloads, order) must be equal and both chains verify. SQLite
and PostgreSQL (``tests/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from include.dsr.core.errors import TerminalError
from include.dsr.ledger.api import (
    Ledger,
    NewRequest,
    PersonalDataError,
    RequestClose,
    RequestConflictError,
    SystemUpdate,
    UnknownRequestError,
    subject_fingerprint,
)

RECEIVED = datetime(2026, 3, 5, 9, 30, tzinfo=UTC)
IDS = [f"req-{i}" for i in range(5)]
UPDATES = [
    SystemUpdate("req-0", "fabconnect_app", "erase", "pending"),
    SystemUpdate("req-1", "fabconnect_app", "erase", "pending"),
    SystemUpdate("req-0", "fabconnect_app", "erase", "completed", record_count=7, evidence={"deleted": {"orders": 7}}),
    SystemUpdate("req-0", "fabconnect_app", "erase", "completed", outcome="again, same status"),  # no event
    SystemUpdate("req-2", "payflow", "erase", "waiting", outcome="partner status: pending"),
    SystemUpdate("req-2", "payflow", "erase", "failed", outcome="claims erased, keeps 2 rows"),
    SystemUpdate("req-3", "fabconnect_s3", "erase", "skipped"),
]


@pytest.fixture
def two_ledgers(ledger_url: str, tmp_path) -> Iterator[tuple[Ledger, Ledger]]:
    """Two empty ledgers on the same backend (the second in another SQLite file / PG schema)."""
    if ledger_url.startswith("sqlite"):
        other_url = f"sqlite:///{tmp_path / 'other.db'}"
        cleanup = None
    else:
        base = sa.engine.make_url(ledger_url)
        schema = base.query["options"].split("=", 1)[1] + "_bulk"
        engine = sa.create_engine(base.difference_update_query(["options"]))
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        other_url = base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
        cleanup = (engine, schema)
    one, many = Ledger(ledger_url), Ledger(other_url)
    for ledger in (one, many):
        ledger.create_schema()
        for i, rid in enumerate(IDS):
            fingerprint = subject_fingerprint({"email": f"p{i}@example.com"}, "s")
            ledger.record_request(rid, "erasure", "GDPR", fingerprint, RECEIVED, RECEIVED + timedelta(days=30))
    yield one, many
    one.close()
    many.close()
    if cleanup:
        engine, schema = cleanup
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def _rows(ledger: Ledger) -> list[tuple]:
    found = []
    for rows in ledger.system_results_of(IDS).values():
        found += [
            (r.request_id, r.system, r.action, r.status, r.record_count, r.outcome, r.evidence, r.attempts)
            for r in rows
        ]
    return sorted(found)


def _events(ledger: Ledger) -> list[tuple]:
    return [(e.request_id, e.event_type, e.payload_json, e.dedupe_key) for e in ledger.events()]


def test_bulk_system_rows_equal_one_by_one(two_ledgers) -> None:
    one, many = two_ledgers
    for u in UPDATES:
        one.upsert_system_result(u.request_id, u.system, u.action, u.status, u.record_count, u.outcome, u.evidence)
    many.upsert_system_results(UPDATES[:3])  # two batches: the second sees the first's rows
    many.upsert_system_results(UPDATES[3:])
    assert _rows(many) == _rows(one)
    assert _events(many) == _events(one)
    assert [r.attempts for r in many.system_results("req-0")] == [3]
    one.verify_chain_or_raise()
    many.verify_chain_or_raise()


def test_bulk_events_skip_stored_and_repeated_dedupe_keys(two_ledgers) -> None:
    one, many = two_ledgers
    events = [
        ("req-0", "erasure.planned", {"rows": 3}, "req-0:erasure.planned"),
        ("req-1", "erasure.planned", {"rows": 1}, "req-1:erasure.planned"),
        ("req-0", "erasure.planned", {"rows": 3}, "req-0:erasure.planned"),  # repeated in the list
        (None, "wave.received", {"lines": 2}, None),
    ]
    for rid, kind, payload, key in events:
        one.append_event(rid, kind, payload, dedupe_key=key)
    assert many.append_events(events) == 3
    assert many.append_events(events[:2]) == 0  # a re-run appends nothing
    assert _events(many) == _events(one)
    assert [e.event_type for e in many.events_of(["req-0", "req-4"])["req-0"]] == [
        "request.received",
        "erasure.planned",
    ]
    assert many.events_of(["req-4"])["req-4"][0].event_type == "request.received"
    planned = many.events_of(["req-0", "req-1", "req-4"], ["erasure.planned"])
    assert {rid: [e.payload["rows"] for e in found] for rid, found in planned.items()} == {
        "req-0": [3],
        "req-1": [1],
        "req-4": [],
    }
    many.verify_chain_or_raise()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (
            lambda lg: lg.upsert_system_results([UPDATES[0], SystemUpdate("nope", "x", "erase", "pending")]),
            UnknownRequestError,
        ),
        (lambda lg: lg.append_events([("req-0", "a.b", {}, None), ("nope", "a.b", {}, None)]), UnknownRequestError),
        (
            lambda lg: lg.upsert_system_results(
                [SystemUpdate("req-0", "x", "erase", "pending", outcome="to a@b.example")]
            ),
            PersonalDataError,
        ),
        (lambda lg: lg.append_events([("req-0", "a.b", {"to": "a@b.example"}, None)]), PersonalDataError),
    ],
)
def test_bad_rows_write_nothing(two_ledgers, call, error) -> None:
    _, many = two_ledgers
    before = (_rows(many), _events(many))
    with pytest.raises(error):
        call(many)
    assert (_rows(many), _events(many)) == before


def _tip_reads(ledger: Ledger) -> list[str]:
    """The chain-tip SELECTs sent through ``ledger``'s engine (appended to as they run)."""
    reads: list[str] = []

    def record(conn, cursor, statement, *_):
        if statement.lstrip().upper().startswith("SELECT") and "ORDER BY dsr_events.seq DESC" in statement:
            reads.append(statement)

    sa.event.listen(ledger._engine, "before_cursor_execute", record)
    return reads


def test_a_batch_reads_the_chain_tip_once_and_the_next_transaction_reads_it_again(ledger_url: str) -> None:
    first, other = Ledger(ledger_url), Ledger(ledger_url)  # two engines: two writers
    try:
        first.create_schema()
        fingerprint = subject_fingerprint({"email": "tip@example.com"}, "s")
        first.record_request("req-tip", "access", "GDPR", fingerprint, RECEIVED, RECEIVED + timedelta(days=30))
        reads = _tip_reads(first)
        with first.batch():
            for i in range(20):
                first.append_event("req-tip", "note.added", {"i": i})
            first.append_events([("req-tip", "note.added", {"i": 20 + i}, None) for i in range(5)])
            first.set_status("req-tip", "in_progress")
        assert len(reads) == 1
        other.append_event("req-tip", "note.added", {"by": "another writer"})  # moves the tip
        first.append_event("req-tip", "note.added", {"i": "after"})  # same pooled connection, new transaction
        assert len(reads) == 2
        first.verify_chain_or_raise()
        assert [e.seq for e in first.events()] == list(range(1, len(first.events()) + 1))
    finally:
        first.close()
        other.close()


def test_a_failed_batch_leaves_no_remembered_tip(ledger_url: str) -> None:
    ledger, other = Ledger(ledger_url), Ledger(ledger_url)
    try:
        ledger.create_schema()
        fingerprint = subject_fingerprint({"email": "tip2@example.com"}, "s")
        ledger.record_request("req-tip2", "access", "GDPR", fingerprint, RECEIVED, RECEIVED + timedelta(days=30))

        def fail_after_one_event() -> None:
            with ledger.batch():
                ledger.append_event("req-tip2", "note.added", {"i": 1})
                raise RuntimeError("stop")  # rolled back: the event and its tip are gone

        with pytest.raises(RuntimeError, match="stop"):
            fail_after_one_event()
        other.append_event("req-tip2", "note.added", {"by": "another writer"})
        ledger.append_event("req-tip2", "note.added", {"i": 2})
        ledger.verify_chain_or_raise()
        assert [e.payload_json for e in ledger.events() if e.event_type == "note.added"] == [
            '{"by":"another writer"}',
            '{"i":2}',
        ]
    finally:
        ledger.close()
        other.close()


def _request_reads(ledger: Ledger) -> list[str]:
    """The SELECTs of one request row sent through ``ledger``'s engine."""
    reads: list[str] = []

    def record(conn, cursor, statement, *_):
        text = " ".join(statement.split())
        if text.upper().startswith("SELECT") and "FROM dsr_requests WHERE dsr_requests.request_id =" in text:
            reads.append(statement)

    sa.event.listen(ledger._engine, "before_cursor_execute", record)
    return reads


def test_a_batch_reads_each_request_row_once_and_the_next_transaction_reads_it_again(ledger_url: str) -> None:
    """What a wave does to each request in one transaction reads its row once; what another writer
    changes afterwards is seen by the next transaction on the same pooled connection."""
    first, other = Ledger(ledger_url), Ledger(ledger_url)
    try:
        first.create_schema()
        fingerprint = subject_fingerprint({"email": "rows@example.com"}, "s")
        reads = _request_reads(first)
        with first.batch():
            first.record_request("req-rows", "access", "GDPR", fingerprint, RECEIVED, RECEIVED + timedelta(days=30))
            first.set_status("req-rows", "in_progress")
            first.append_event("req-rows", "identity.verified", {"method": "email_link"})
            first.set_package("req-rows", "s3://exports/req-rows/package.zip", RECEIVED + timedelta(days=7))
            assert first.get_request("req-rows").status == "in_progress"  # its own writes, from the kept row
            first.close_request("req-rows", "completed", RECEIVED + timedelta(days=1), "done")
        assert len(reads) == 2  # none there yet before the insert, then the new row once
        assert first.get_request("req-rows").status == "completed"
        other.set_status("req-rows", "failed", "changed by another writer")
        assert first.get_request("req-rows").status == "failed"  # outside a batch: read afresh
        with first.batch():
            assert first.get_request("req-rows").outcome_summary == "changed by another writer"
        first.verify_chain_or_raise()
    finally:
        first.close()
        other.close()


def test_a_failed_batch_leaves_no_remembered_row(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    try:
        ledger.create_schema()
        fingerprint = subject_fingerprint({"email": "rows2@example.com"}, "s")
        ledger.record_request("req-rows2", "access", "GDPR", fingerprint, RECEIVED, RECEIVED + timedelta(days=30))

        def fail_after_a_change() -> None:
            with ledger.batch():
                ledger.set_status("req-rows2", "in_progress")
                raise RuntimeError("stop")  # rolled back: the change and its kept row are gone

        with pytest.raises(RuntimeError, match="stop"):
            fail_after_a_change()
        with ledger.batch():
            assert ledger.get_request("req-rows2").status == "received"
    finally:
        ledger.close()


def _new(rid: str, email: str, right: str = "access", received=RECEIVED) -> NewRequest:
    fingerprint = subject_fingerprint({"email": email}, "s")
    return NewRequest(rid, right, "GDPR", fingerprint, received, received + timedelta(days=30), "manual__run")


def test_bulk_requests_and_statuses_equal_one_by_one(two_ledgers) -> None:
    """The same rows, events and refusals as record_request and set_status line by line."""
    one, many = two_ledgers
    lines = [
        _new("new-1", "n1@example.com"),
        _new("req-0", "p0@example.com", right="erasure"),  # recorded before: a re-run, no event
        _new("req-1", "someone.else@example.com", right="erasure"),  # another subject's id: refused
        _new("new-2", "n2@example.com", received=datetime(2026, 11, 20, 9, 0)),  # no timezone: refused
        _new("new-3", "n3@example.com", right="restriction"),
        _new("new-1", "n1@example.com"),  # the same line twice: the first counts
    ]
    expected: dict[str, object] = {}
    for new in lines:
        try:
            row = one.record_request(
                new.request_id,
                new.right,
                new.jurisdiction,
                new.subject_fingerprint,
                new.received_at,
                new.due_at,
                new.dag_run_id,
            )
            expected.setdefault(new.request_id, row.request_id)
        except TerminalError as exc:
            expected.setdefault(new.request_id, type(exc))
    recorded = many.record_requests(lines)
    assert {rid: (r.request_id if not isinstance(r, Exception) else type(r)) for rid, r in recorded.items()} == expected
    assert isinstance(recorded["req-1"], RequestConflictError)
    opened = [rid for rid, r in recorded.items() if not isinstance(r, Exception)]
    for rid in opened:
        one.set_status(rid, "in_progress")
    assert many.set_statuses(opened, "in_progress")["new-3"].status == "in_progress"
    assert many.set_statuses(opened, "in_progress")["new-1"].status == "in_progress"  # again: no event
    assert _events(many) == _events(one)
    assert [many.get_request(rid) for rid in opened] == [
        replace(
            one.get_request(rid),
            created_at=many.get_request(rid).created_at,
            updated_at=many.get_request(rid).updated_at,
        )
        for rid in opened
    ]
    one.verify_chain_or_raise()
    many.verify_chain_or_raise()


def test_bulk_statuses_of_an_unknown_request_write_nothing(two_ledgers) -> None:
    _, many = two_ledgers
    before = _events(many)
    with pytest.raises(UnknownRequestError):
        many.set_statuses(["req-0", "nope"], "in_progress")
    assert _events(many) == before
    assert many.get_request("req-0").status == "received"


def _same_rows(one: Ledger, many: Ledger, ids: list[str]) -> None:
    """Equal request rows but the write times."""
    got = [many.get_request(rid) for rid in ids]
    assert got == [
        replace(one.get_request(rid), created_at=row.created_at, updated_at=row.updated_at)
        for rid, row in zip(ids, got, strict=True)
    ]


def test_bulk_packages_and_closes_equal_one_by_one(two_ledgers) -> None:
    """set_packages and close_requests write the rows and events set_package and close_request
    write request by request: a link set again or a close repeated alike writes nothing, a close
    with another status is a new close."""
    one, many = two_ledgers
    expires = RECEIVED + timedelta(days=7)
    links = [
        ("req-0", "https://s3.example/req-0/package.zip?sig=a", expires),
        ("req-1", "https://s3.example/req-1/package.zip?sig=b", expires),
        ("req-0", "https://s3.example/req-0/package.zip?sig=a", expires),  # again: nothing
    ]
    closes = [
        RequestClose("req-0", "completed", RECEIVED + timedelta(days=2), "12 records delivered", "data_provided"),
        RequestClose("req-1", "failed", RECEIVED + timedelta(days=2), "checks failed", "failed"),
        RequestClose(
            "req-2", "completed", RECEIVED + timedelta(days=3), "no personal data found", "no_personal_data_found"
        ),
    ]
    for rid, uri, when in links:
        one.set_package(rid, uri, when)
    for close in closes:
        one.close_request(close.request_id, close.status, close.closed_at, close.outcome_summary, close.outcome)
    one.close_request("req-0", "completed", RECEIVED + timedelta(days=4), "again", "data_provided")  # alike: kept
    one.close_request("req-1", "completed", RECEIVED + timedelta(days=5), "resumed", "data_provided")  # a new close

    with many.batch():
        many.set_packages(links[:2])
        assert many.set_packages(links[2:])["req-0"].package_uri == links[0][1]
    many.close_requests(closes)
    again = many.close_requests(
        [
            RequestClose("req-0", "completed", RECEIVED + timedelta(days=4), "again", "data_provided"),
            RequestClose("req-1", "completed", RECEIVED + timedelta(days=5), "resumed", "data_provided"),
        ]
    )
    assert again["req-0"].outcome_summary == "12 records delivered"
    assert (again["req-1"].status, again["req-1"].outcome_summary) == ("completed", "resumed")
    assert _events(many) == _events(one)
    _same_rows(one, many, IDS)
    many.verify_chain_or_raise()


def _closing(*closes: tuple[str, str, str]):
    """A write closing ``(request_id, status, summary)`` at RECEIVED (outcome: the status's default)."""
    outcomes = {"completed": "data_provided", "failed": "failed"}
    return lambda ledger: ledger.close_requests(
        [RequestClose(rid, status, RECEIVED, summary, outcomes[status]) for rid, status, summary in closes]
    )


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda ledger: ledger.set_packages([("req-0", "s3://x/req-0", RECEIVED), ("nope", "s3://x", RECEIVED)]),
            id="links",
        ),
        pytest.param(_closing(("req-0", "completed", "done"), ("nope", "completed", "done")), id="closes"),
        pytest.param(
            lambda ledger: ledger.close_requests(
                [RequestClose("req-0", "completed", RECEIVED, "sent to a@b.example", "data_provided")]
            ),
            id="personal data in a summary",
        ),
        pytest.param(
            lambda ledger: ledger.close_requests([RequestClose("req-0", "done", RECEIVED, "x", "data_provided")]),
            id="unknown status",
        ),
        pytest.param(
            lambda ledger: ledger.set_packages([("req-0", "s3://x/req-0", datetime(2026, 3, 5, 9, 30))]),
            id="naive expiry",
        ),
        pytest.param(
            lambda ledger: ledger.set_packages([("req-0", "s3://x/a", RECEIVED), ("req-0", "s3://x/b", RECEIVED)]),
            id="a request twice in one call (links)",
        ),
        pytest.param(
            _closing(("req-0", "failed", "checks failed"), ("req-0", "completed", "done")),
            id="a request twice in one call (closes)",
        ),
    ],
)
def test_bulk_packages_and_closes_refuse_bad_input_writing_nothing(two_ledgers, write) -> None:
    _, many = two_ledgers
    before = _events(many)
    with pytest.raises((UnknownRequestError, PersonalDataError, TerminalError, ValueError)):
        write(many)
    assert _events(many) == before
    row = many.get_request("req-0")
    assert (row.package_uri, row.closed_at) == (None, None)
