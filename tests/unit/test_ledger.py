"""Request ledger: idempotency, system rows, hash chain, tamper detection, guards, concurrency.

Every test that takes ``ledger`` runs on SQLite and, when ``DSR_TEST_POSTGRES_URL`` is
set, on PostgreSQL (see ``tests/conftest.py``).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from include.dsr.core.errors import LedgerIntegrityError, TerminalError
from include.dsr.ledger.api import (
    Ledger,
    PersonalDataError,
    RequestConflictError,
    UnknownRequestError,
    subject_fingerprint,
)
from include.dsr.ledger.chain import event_hash
from include.dsr.ledger.schema import dsr_events

SECRET = "test-secret"
FP_A = subject_fingerprint({"email": "alice@example.com"}, SECRET)
FP_B = subject_fingerprint({"email": "bob@example.com"}, SECRET)
RECEIVED = datetime(2026, 3, 5, 9, 30, tzinfo=UTC)
DUE = datetime(2026, 4, 7, 23, 59, tzinfo=UTC)


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    ledger = Ledger(ledger_url)
    ledger.create_schema()
    yield ledger
    ledger.close()


def _record(ledger: Ledger, request_id: str = "req-1", fingerprint: str = FP_A, right: str = "access"):
    return ledger.record_request(request_id, right, "GDPR", fingerprint, RECEIVED, DUE, dag_run_id="manual__1")


def _event_types(ledger: Ledger, request_id: str | None = None) -> list[str]:
    return [event.event_type for event in ledger.events(request_id)]


# -- requests -------------------------------------------------------------------------


def test_create_schema_is_idempotent(ledger: Ledger) -> None:
    ledger.create_schema()
    tables = set(sa.inspect(ledger.engine).get_table_names())
    assert {"dsr_requests", "dsr_request_systems", "dsr_events"} <= tables


def test_record_request_inserts_row_and_received_event(ledger: Ledger) -> None:
    row = _record(ledger)

    assert (row.request_id, row.right, row.jurisdiction) == ("req-1", "access", "GDPR")
    assert row.status == "received"
    assert (row.received_at, row.due_at, row.dag_run_id) == (RECEIVED, DUE, "manual__1")
    assert row.is_open
    assert row.effective_due_at == DUE
    assert ledger.get_request("req-1") == row
    [event] = ledger.events("req-1")
    assert (event.seq, event.event_type) == (1, "request.received")
    assert event.dedupe_key == "req-1:request.received"
    assert event.payload["right"] == "access"


def test_record_request_twice_returns_existing_row_without_new_event(ledger: Ledger) -> None:
    first = _record(ledger)
    later = RECEIVED + timedelta(days=2)

    again = ledger.record_request("req-1", "access", "GDPR", FP_A, later, DUE + timedelta(days=2))

    assert again == first
    assert len(ledger.list_requests()) == 1
    assert _event_types(ledger) == ["request.received"]


@pytest.mark.parametrize(
    ("fingerprint", "right"),
    [
        pytest.param(FP_B, "access", id="other-subject"),
        pytest.param(FP_A, "erasure", id="other-right"),
    ],
)
def test_record_request_reused_id_raises_conflict(ledger: Ledger, fingerprint: str, right: str) -> None:
    _record(ledger)

    with pytest.raises(RequestConflictError) as excinfo:
        _record(ledger, fingerprint=fingerprint, right=right)

    message = str(excinfo.value)
    assert "req-1" in message
    assert "new request_id" in message
    assert FP_A not in message
    assert FP_B not in message
    assert isinstance(excinfo.value, TerminalError)
    assert len(ledger.events()) == 1


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        pytest.param({"subject_fingerprint": "alice@example.com"}, "subject_fingerprint", id="raw-identity"),
        pytest.param({"right": "deletion"}, "unknown right", id="unknown-right"),
        pytest.param({"jurisdiction": "LGPD"}, "unknown jurisdiction", id="unknown-jurisdiction"),
        pytest.param({"received_at": datetime(2026, 3, 5)}, "timezone-aware", id="naive-datetime"),
        pytest.param({"request_id": ""}, "request_id", id="empty-request-id"),
        pytest.param({"request_id": "alice@example.com"}, "email", id="email-as-request-id"),
    ],
)
def test_record_request_refuses_bad_input(ledger: Ledger, overrides: dict, fragment: str) -> None:
    args = {
        "request_id": "req-1",
        "right": "access",
        "jurisdiction": "GDPR",
        "subject_fingerprint": FP_A,
        "received_at": RECEIVED,
        "due_at": DUE,
    } | overrides

    with pytest.raises(TerminalError, match=fragment):
        ledger.record_request(**args)

    assert ledger.list_requests() == []


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda lg: lg.set_status("nope", "in_progress"), id="set_status"),
        pytest.param(lambda lg: lg.close_request("nope", "completed", RECEIVED, "answered"), id="close_request"),
        pytest.param(lambda lg: lg.set_package("nope", "s3://b/nope/", DUE), id="set_package"),
        pytest.param(lambda lg: lg.extend("nope", DUE, "complex request"), id="extend"),
        pytest.param(lambda lg: lg.upsert_system_result("nope", "payflow", "export", "pending"), id="upsert_system"),
        pytest.param(lambda lg: lg.append_event("nope", "partner.notified", {}), id="append_event"),
    ],
)
def test_unknown_request_id_raises(ledger: Ledger, call: Callable[[Ledger], object]) -> None:
    with pytest.raises(UnknownRequestError, match="'nope'"):
        call(ledger)
    assert ledger.events() == []


def test_status_changes_are_recorded_once(ledger: Ledger) -> None:
    _record(ledger)

    ledger.set_status("req-1", "in_progress")
    ledger.set_status("req-1", "in_progress")
    row = ledger.close_request("req-1", "completed", RECEIVED + timedelta(days=3), "package sent")
    ledger.close_request("req-1", "completed", RECEIVED + timedelta(days=4), "package sent")

    assert (row.status, row.closed_at) == ("completed", RECEIVED + timedelta(days=3))
    assert row.outcome_summary == "package sent"
    assert not row.is_open
    assert _event_types(ledger) == ["request.received", "request.status_changed", "request.closed"]
    assert ledger.events()[1].payload == {"from": "received", "to": "in_progress", "outcome_summary": None}


def test_close_request_refuses_a_non_closing_status(ledger: Ledger) -> None:
    _record(ledger)
    with pytest.raises(TerminalError, match="closing status"):
        ledger.close_request("req-1", "in_progress", RECEIVED, "nothing")


def test_list_requests_filters_by_status_and_open(ledger: Ledger) -> None:
    _record(ledger, "req-1")
    _record(ledger, "req-2", fingerprint=FP_B)
    _record(ledger, "req-3", right="erasure")
    ledger.set_status("req-2", "waiting_on_partner")
    ledger.close_request("req-3", "refused", RECEIVED, "manifestly unfounded")

    assert [r.request_id for r in ledger.list_requests()] == ["req-1", "req-2", "req-3"]
    assert [r.request_id for r in ledger.list_requests(status="waiting_on_partner")] == ["req-2"]
    assert [r.request_id for r in ledger.list_requests(open_only=True)] == ["req-1", "req-2"]


def test_set_package_and_extend_update_row_and_append_events(ledger: Ledger) -> None:
    _record(ledger)
    expires = RECEIVED + timedelta(days=7)
    extended = DUE + timedelta(days=61)

    ledger.set_package("req-1", "s3://fabconnect-dsr-exports/req-1/", expires)
    ledger.set_package("req-1", "s3://fabconnect-dsr-exports/req-1/", expires)
    row = ledger.extend("req-1", extended, "complex request: 12 partners involved")

    assert (row.package_uri, row.package_url_expires_at) == ("s3://fabconnect-dsr-exports/req-1/", expires)
    assert (row.extended_due_at, row.effective_due_at) == (extended, extended)
    assert row.extension_reason == "complex request: 12 partners involved"
    assert _event_types(ledger, "req-1") == ["request.received", "package.link_issued", "request.extended"]
    (issued,) = [e for e in ledger.events("req-1") if e.event_type == "package.link_issued"]
    assert "req-1/" not in issued.payload_json  # the link stays out of the append-only log
    assert issued.payload["link_sha256"] == hashlib.sha256(b"s3://fabconnect-dsr-exports/req-1/").hexdigest()


# -- system rows ----------------------------------------------------------------------


def test_upsert_system_result_never_duplicates_rows(ledger: Ledger) -> None:
    _record(ledger)

    ledger.upsert_system_result("req-1", "payflow", "export", "pending")
    ledger.upsert_system_result("req-1", "payflow", "export", "completed", record_count=3, evidence={"s3": ["k1"]})
    row = ledger.upsert_system_result("req-1", "payflow", "export", "completed", record_count=4)

    assert ledger.system_results("req-1") == [row]
    assert (row.status, row.record_count, row.attempts) == ("completed", 4, 3)
    assert row.evidence == {"s3": ["k1"]}
    assert _event_types(ledger) == ["request.received", "system.pending", "system.completed"]
    assert ledger.events()[-1].payload["previous_status"] == "pending"


def test_system_rows_are_per_system_and_action(ledger: Ledger) -> None:
    _record(ledger, right="erasure")

    ledger.upsert_system_result("req-1", "fabconnect_app", "erase", "completed", record_count=12)
    ledger.upsert_system_result("req-1", "precision-parts-gmbh", "notify", "waiting", outcome="request file sent")
    ledger.upsert_system_result("req-1", "fabconnect_app", "locate", "completed", record_count=14)

    keys = [(r.system, r.action, r.status) for r in ledger.system_results("req-1")]
    assert keys == [
        ("fabconnect_app", "erase", "completed"),
        ("fabconnect_app", "locate", "completed"),
        ("precision-parts-gmbh", "notify", "waiting"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        pytest.param({"action": "delete"}, "unknown action", id="unknown-action"),
        pytest.param({"status": "done"}, "unknown system status", id="unknown-status"),
        pytest.param({"record_count": -1}, "record_count", id="negative-count"),
        pytest.param({"system": ""}, "system", id="empty-system"),
    ],
)
def test_upsert_system_result_refuses_bad_input(ledger: Ledger, kwargs: dict, fragment: str) -> None:
    _record(ledger)
    args = {"request_id": "req-1", "system": "payflow", "action": "export", "status": "pending"} | kwargs
    with pytest.raises(TerminalError, match=fragment):
        ledger.upsert_system_result(**args)
    assert ledger.system_results("req-1") == []


# -- event chain ----------------------------------------------------------------------


def _build_chain(ledger: Ledger) -> None:
    """Six events, seq 1..6: request.received, four events of req-1, one global event."""
    _record(ledger)
    for index in range(4):
        ledger.append_event("req-1", "partner.notified", {"partner": f"partner-{index}", "count": index})
    ledger.append_event(None, "retention.run", {"purged": 7})


def test_event_chain_verifies(ledger: Ledger) -> None:
    _build_chain(ledger)

    report = ledger.verify_chain_or_raise()

    events = ledger.events()
    assert (report.ok, report.checked, report.first_broken_seq, report.reason) == (True, 6, None, None)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[0].prev_hash == "0" * 64
    assert all(e.prev_hash == prev.hash for prev, e in itertools.pairwise(events))
    assert (report.last_seq, report.last_hash) == (6, events[-1].hash)
    assert events[-1].request_id is None
    assert len(ledger.events("req-1")) == 5


def test_empty_chain_verifies(ledger: Ledger) -> None:
    assert ledger.verify_chain().ok
    assert ledger.verify_chain().checked == 0


CHANGED_4 = "hash mismatch at seq 4: row content changed"
RELINK_5 = "prev_hash at seq 5 does not match hash of seq 4"
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def _update(at_seq: int, **values) -> Callable[[sa.Connection], None]:
    def tamper(conn: sa.Connection) -> None:
        conn.execute(sa.update(dsr_events).where(dsr_events.c.seq == at_seq).values(**values))

    return tamper


def _rehash(seq: int, payload: str) -> Callable[[sa.Connection], None]:
    """A careful forger: change a payload and recompute that row's hash."""

    def tamper(conn: sa.Connection) -> None:
        row = conn.execute(sa.select(dsr_events).where(dsr_events.c.seq == seq)).mappings().one()
        new_hash = event_hash(row["prev_hash"], seq, row["request_id"], row["event_type"], payload, row["created_at"])
        _update(seq, payload=payload, hash=new_hash)(conn)

    return tamper


def _delete(seq: int) -> Callable[[sa.Connection], None]:
    def tamper(conn: sa.Connection) -> None:
        conn.execute(sa.delete(dsr_events).where(dsr_events.c.seq == seq))

    return tamper


def _swap(first: int, second: int) -> Callable[[sa.Connection], None]:
    def tamper(conn: sa.Connection) -> None:
        _update(first, seq=-1)(conn)
        _update(second, seq=first)(conn)
        _update(-1, seq=second)(conn)

    return tamper


@pytest.mark.parametrize(
    ("tamper", "broken_seq", "reason"),
    [
        pytest.param(_update(4, payload='{"count":99}'), 4, CHANGED_4, id="payload-edited"),
        pytest.param(_update(4, event_type="partner.ignored"), 4, CHANGED_4, id="event-type-edited"),
        pytest.param(_update(4, request_id="req-2"), 4, CHANGED_4, id="request-id-edited"),
        pytest.param(_update(4, created_at=LONG_AGO), 4, CHANGED_4, id="time-edited"),
        pytest.param(_update(4, hash="f" * 64), 4, CHANGED_4, id="hash-changed"),
        pytest.param(_rehash(4, '{"count":99}'), 5, RELINK_5, id="row-rehashed"),
        pytest.param(_delete(4), 5, "seq gap between 3 and 5 (row deleted)", id="middle-row-deleted"),
        pytest.param(_delete(1), 2, "chain starts at seq 2 instead of 1 (rows deleted)", id="first-deleted"),
        pytest.param(_swap(3, 4), 3, "hash mismatch at seq 3: row content changed", id="rows-reordered"),
    ],
)
def test_tampering_is_detected_at_first_broken_seq(
    ledger: Ledger, tamper: Callable[[sa.Connection], None], broken_seq: int, reason: str
) -> None:
    _build_chain(ledger)
    with ledger.engine.begin() as conn:
        tamper(conn)

    report = ledger.verify_chain()

    assert (report.ok, report.first_broken_seq) == (False, broken_seq)
    assert reason in report.reason
    with pytest.raises(LedgerIntegrityError, match=re.escape(reason)):
        ledger.verify_chain_or_raise()


def test_unreadable_row_is_reported_not_raised(ledger: Ledger) -> None:
    if ledger.engine.dialect.name != "sqlite":
        pytest.skip("only SQLite lets text be written into a timestamp column")
    _build_chain(ledger)
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE dsr_events SET created_at = 'yesterday' WHERE seq = 4")

    report = ledger.verify_chain()

    assert (report.ok, report.first_broken_seq, report.last_seq) == (False, 4, 3)
    assert "unreadable row after seq 3" in report.reason


def test_dedupe_key_returns_existing_event(ledger: Ledger) -> None:
    _record(ledger)

    first = ledger.append_event("req-1", "package.created", {"keys": 3}, dedupe_key="req-1:package.created")
    again = ledger.append_event("req-1", "package.created", {"keys": 4}, dedupe_key="req-1:package.created")

    assert again == first
    assert again.payload == {"keys": 3}
    assert _event_types(ledger) == ["request.received", "package.created"]
    assert ledger.verify_chain().ok


@pytest.mark.parametrize(
    "event_type",
    [
        pytest.param("Package", id="no-dot"),
        pytest.param("package created", id="space"),
        pytest.param("", id="empty"),
    ],
)
def test_append_event_refuses_bad_event_type(ledger: Ledger, event_type: str) -> None:
    with pytest.raises(TerminalError, match="event_type"):
        ledger.append_event(None, event_type, {})


# -- personal-data guard --------------------------------------------------------------

EMAIL = "Alice.Smith@example.com"


def _reply(ledger: Ledger, payload: dict) -> object:
    return ledger.append_event("req-1", "partner.replied", payload)


def _export(ledger: Ledger, **kwargs) -> object:
    return ledger.upsert_system_result("req-1", "payflow", "export", "completed", **kwargs)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda lg: _reply(lg, {"contact": EMAIL}), id="payload-value"),
        pytest.param(lambda lg: _reply(lg, {"to": ["x", EMAIL]}), id="payload-list"),
        pytest.param(lambda lg: _reply(lg, {EMAIL: 1}), id="payload-key"),
        pytest.param(lambda lg: _export(lg, evidence={"c": {"e": EMAIL}}), id="evidence"),
        pytest.param(lambda lg: _export(lg, outcome=f"bounce {EMAIL}"), id="outcome"),
        pytest.param(lambda lg: lg.set_status("req-1", "refused", f"sent to {EMAIL}"), id="outcome-summary"),
        pytest.param(lambda lg: lg.extend("req-1", DUE, f"asked {EMAIL}"), id="extension-reason"),
    ],
)
def test_email_like_values_are_refused(ledger: Ledger, call: Callable[[Ledger], object]) -> None:
    _record(ledger)

    with pytest.raises(PersonalDataError) as excinfo:
        call(ledger)

    assert isinstance(excinfo.value, TerminalError)
    assert EMAIL.lower() not in str(excinfo.value).lower()
    assert _event_types(ledger) == ["request.received"]
    assert ledger.system_results("req-1") == []


def test_guard_lets_facts_through(ledger: Ledger) -> None:
    _record(ledger)
    payload = {"key": "s3://fabconnect-dsr-exports/req-1/manifest.json", "note": "user at example", "n": 3}

    event = ledger.append_event("req-1", "package.created", payload)

    assert event.payload == payload


# -- time -----------------------------------------------------------------------------


def test_aware_datetimes_round_trip_as_utc(ledger: Ledger) -> None:
    berlin = timezone(timedelta(hours=2))
    received = datetime(2026, 8, 31, 23, 30, 15, 123456, tzinfo=berlin)

    ledger.record_request("req-tz", "erasure", "GDPR", FP_A, received, received + timedelta(days=30))
    ledger.set_package("req-tz", "s3://b/req-tz/", received + timedelta(days=7))
    row = ledger.get_request("req-tz")

    for value in (row.received_at, row.due_at, row.created_at, row.updated_at, row.package_url_expires_at):
        assert value.tzinfo == UTC
    assert row.received_at == received
    assert row.received_at.hour == 21
    assert row.received_at.microsecond == 123456
    assert all(e.created_at.tzinfo == UTC for e in ledger.events())
    assert ledger.events()[0].payload["received_at"] == "2026-08-31T21:30:15.123456+00:00"


def test_injected_clock_stamps_rows_and_events(ledger_url: str) -> None:
    fixed = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with Ledger(ledger_url, clock=lambda: fixed) as ledger:
        ledger.create_schema()
        row = _record(ledger)
        assert row.created_at == fixed
        assert ledger.events()[0].created_at == fixed


# -- engines and concurrency ------------------------------------------------------------


def test_from_engine_leaves_callers_engine_transactional(ledger_url: str) -> None:
    engine = sa.create_engine(ledger_url)
    ledger = Ledger.from_engine(engine)
    ledger.create_schema()
    _record(ledger)
    ledger.close()

    with engine.connect() as conn:
        conn.execute(sa.delete(dsr_events))
        conn.rollback()
    assert len(ledger.events()) == 1
    engine.dispose()


def _run_in_threads(target: Callable[[int], None], count: int) -> None:
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_concurrent_appends_keep_one_valid_chain(ledger: Ledger, ledger_url: str) -> None:
    _record(ledger)
    ledger.append_event(None, "test.started", {})

    def append_hundred(worker: int) -> None:
        with Ledger(ledger_url) as own:  # its own engine, like a separate Airflow task
            for index in range(100):
                own.append_event("req-1", "test.appended", {"worker": worker, "index": index})

    _run_in_threads(append_hundred, 2)

    events = ledger.events()
    assert len([e for e in events if e.event_type == "test.appended"]) == 200
    assert [e.seq for e in events] == list(range(1, 203))
    report = ledger.verify_chain()
    assert report.ok
    assert report.checked == 202


def test_concurrent_record_of_same_request_inserts_once(ledger: Ledger, ledger_url: str) -> None:
    def record(_: int) -> None:
        with Ledger(ledger_url) as own:
            _record(own, "req-race")

    _run_in_threads(record, 4)

    assert len(ledger.list_requests()) == 1
    assert _event_types(ledger) == ["request.received"]


# -- fingerprint ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({"email": " Alice@Example.COM "}, {"email": "alice@example.com"}, id="email-case-trim"),
        pytest.param({"phone": "+49 (30) 123-456"}, {"phone": "+4930123456"}, id="phone-format"),
        pytest.param({"account_id": 42}, {"account_id": " 42 "}, id="account-id-str"),
        pytest.param({"email": "a@b.io", "phone": None}, {"email": "a@b.io"}, id="empty-dropped"),
        pytest.param({"phone": "+1 555", "email": "a@b.io"}, {"email": "a@b.io", "phone": "+1555"}, id="key-order"),
    ],
)
def test_fingerprint_normalises_identities(first: dict, second: dict) -> None:
    assert subject_fingerprint(first, SECRET) == subject_fingerprint(second, SECRET)


def test_fingerprint_is_keyed_hex_and_distinguishes_subjects() -> None:
    assert len(FP_A) == 64
    assert int(FP_A, 16) >= 0
    assert FP_A != FP_B
    assert subject_fingerprint({"email": "alice@example.com"}, "other-secret") != FP_A
    assert subject_fingerprint({"email": "alice@example.com", "phone": "+1555"}, SECRET) != FP_A


@pytest.mark.parametrize(
    ("identities", "secret", "fragment"),
    [
        pytest.param({}, SECRET, "no usable identity", id="empty"),
        pytest.param({"email": "  "}, SECRET, "no usable identity", id="blank"),
        pytest.param({"name": "Alice"}, SECRET, "unknown identity key", id="unknown-key"),
        pytest.param({"email": "a@b.io"}, "", "secret", id="no-secret"),
    ],
)
def test_fingerprint_refuses_unusable_input(identities: dict, secret: str, fragment: str) -> None:
    with pytest.raises(TerminalError, match=fragment):
        subject_fingerprint(identities, secret)
