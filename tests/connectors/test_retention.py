"""Retention enforcement on SQLite and PostgreSQL, time frozen, without Airflow.

A crafted platform DB with rows on both sides of every cutoff, legal holds (a subject by
account, a visitor by email, a whole collection), a restricted subject, rows an erasure keeps
(one not due, one due), rows still pointed at by retained rows, and objects the rows name. The
run must remove exactly the expired rows and leave every other row byte for byte as it was; a
second run removes nothing; a dry run changes nothing and says exactly what the run then does.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from include.demo import app_schema as s
from include.dsr.core.data_map import load_data_map
from include.dsr.core.errors import CheckFailedError
from include.dsr.ledger.api import Ledger
from include.dsr.ledger.holds import COLLECTION, SUBJECT, LegalHolds
from include.dsr.ledger.registry import HeldRow
from include.dsr.processing import restrictions
from include.dsr.retention import run as retention
from include.dsr.retention.purge import email_hold_hash
from include.dsr.retention.rules import minus_period
from include.dsr.rights.runtime import Runtime

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
N = NOW.replace(tzinfo=None)
OLD, RECENT = N - timedelta(days=4 * 365), N - timedelta(days=10)
HELD_VISITOR = "held.visitor@example.com"


def ago(**kw) -> datetime:
    return N - timedelta(**kw)


@pytest.fixture
def rt(db_url: str, tmp_path, s3_factory) -> Runtime:
    engine = sa.create_engine(db_url)
    s.metadata.create_all(engine)
    s3 = s3_factory()
    exports = f"exports-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=exports)
    data_map = load_data_map()
    platform_bucket = data_map.system("fabconnect_s3").channel_config["bucket"]
    try:
        s3.create_bucket(Bucket=platform_bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.create_schema()
    runtime = Runtime(data_map=data_map, ledger=ledger, app_engine=engine, s3=s3, exports_bucket=exports)
    runtime.prefix = uuid.uuid4().hex[:8]  # type: ignore[attr-defined]  # object keys unique per test
    return runtime


def build(rt: Runtime) -> dict[str, Any]:
    """The crafted world; returns the ids the run must remove, per table, and the object keys."""
    p = rt.prefix  # type: ignore[attr-defined]
    acc = {"role": "customer", "email": "x@example.com", "country": "DE", "created_at": ago(days=3000)}
    accounts = [
        {**acc, "id": 1, "first_name": "Ann", "email": "ann@example.com", "last_login_at": ago(days=20)},
        {**acc, "id": 2, "first_name": "Ben", "email": "ben@example.com", "last_login_at": ago(days=1200)},  # inactive
        {**acc, "id": 3, "first_name": "Cy", "email": "cy@example.com", "last_login_at": ago(days=1200)},  # restricted
        {**acc, "id": 4, "first_name": "Di", "email": "di@example.com", "last_login_at": ago(days=1200)},  # on hold
    ]
    web = [
        {"id": i, "account_id": a, "ip_address": "10.0.0.1", "user_agent": "UA", "path": "/", "requested_at": t}
        for i, (a, t) in enumerate(
            [(1, ago(days=91)), (1, ago(days=89)), (3, ago(days=200)), (4, ago(days=200)), (None, ago(days=95))], 1
        )
    ]
    chats = [
        {"id": 1, "visitor_email": "old.visitor@example.com", "started_at": ago(days=400), "transcript": "t"},
        {"id": 2, "visitor_email": f"  {HELD_VISITOR.upper()} ", "started_at": ago(days=400), "transcript": "t"},
        {"id": 3, "visitor_email": "new.visitor@example.com", "started_at": ago(days=30), "transcript": "t"},
    ]
    sms = [
        {"id": 1, "phone": "+491510000001", "direction": "inbound", "body": "b", "sent_at": ago(days=500)},
        {"id": 2, "phone": "+491510000002", "direction": "inbound", "body": "b", "sent_at": ago(days=5)},
    ]
    tickets = [
        {
            "id": 1,
            "account_id": 1,
            "contact_email": "a@x.de",
            "subject": "s",
            "body": "b",
            "created_at": OLD,
            "status": "closed",
        },
        {
            "id": 2,
            "account_id": 1,
            "contact_email": "a@x.de",
            "subject": "s",
            "body": "b",
            "created_at": OLD,
            "status": "open",
        },
        {
            "id": 3,
            "account_id": 1,
            "contact_email": "a@x.de",
            "subject": "s",
            "body": "b",
            "created_at": RECENT,
            "status": "closed",
        },
    ]
    docs = [
        {
            "id": 1,
            "account_id": 1,
            "doc_type": "passport",
            "object_key": f"{p}/id/1.pdf",
            "uploaded_at": ago(days=9),
            "checked_at": ago(days=8),
        },
        {
            "id": 2,
            "account_id": 1,
            "doc_type": "passport",
            "object_key": f"{p}/id/2.pdf",
            "uploaded_at": ago(days=1),
            "checked_at": None,
        },
    ]
    q = {"account_id": 1, "process": "cnc", "material": "alu", "quantity": 1, "price_eur": 10}
    quotes = [
        {**q, "id": 1, "created_at": OLD, "spec_object_key": f"{p}/specs/1.step"},  # expired, nothing points at it
        {**q, "id": 2, "created_at": OLD, "spec_object_key": f"{p}/specs/2.step"},  # expired, an order points at it
        {**q, "id": 3, "created_at": RECENT, "spec_object_key": f"{p}/specs/3.step"},
        {**q, "id": 4, "created_at": ago(days=12 * 365), "spec_object_key": f"{p}/specs/4.step"},  # its order goes too
    ]
    o = {"account_id": 1, "partner_id": 1, "status": "delivered", "total_eur": 10}
    orders = [
        {**o, "id": 1, "quote_id": 2, "ordered_at": ago(days=5 * 365)},  # retained 10 years
        {**o, "id": 2, "quote_id": 4, "ordered_at": ago(days=11 * 365)},  # expired; its invoice too
        {**o, "id": 3, "quote_id": 3, "ordered_at": ago(days=11 * 365)},  # expired, but an erasure keeps it
    ]
    inv = {"account_id": 1, "billing_name": "Ann", "billing_address": "Street 1", "net_eur": 10, "tax_eur": 2}
    invoices = [
        {**inv, "id": 1, "order_id": 2, "invoice_number": "I-1", "issued_at": (N - timedelta(days=9 * 365)).date()},
        {**inv, "id": 2, "order_id": 1, "invoice_number": "I-2", "issued_at": (N - timedelta(days=5 * 365)).date()},
    ]
    suppression = [
        {"id": 1, "email_hash": "a" * 64, "reason": "objection", "added_at": ago(days=11 * 365)},
        {"id": 2, "email_hash": "b" * 64, "reason": "objection", "added_at": ago(days=365)},
    ]
    with rt.app_engine.begin() as conn:
        conn.execute(s.manufacturing_partners.insert(), [{"id": 1, "slug": "p", "legal_name": "P", "country": "DE"}])
        for t, rows in [
            (s.accounts, accounts),
            (s.web_logs, web),
            (s.chatbot_transcripts, chats),
            (s.sms_messages, sms),
            (s.support_tickets, tickets),
            (s.id_documents, docs),
            (s.quotes, quotes),
            (s.orders, orders),
            (s.invoices, invoices),
            (s.suppression_list, suppression),
        ]:
            conn.execute(t.insert(), rows)
    for key in [d["object_key"] for d in docs] + [q["spec_object_key"] for q in quotes]:
        rt.s3.put_object(Bucket="fabconnect-platform", Key=key, Body=b"x")
    # a restricted subject (3), a subject hold (4), a visitor held by email, a collection hold (sms)
    restrictions.ensure_schema(rt.app_engine)
    with rt.app_engine.begin() as conn:
        restrictions.apply(conn, "RESTRICT-3", restrictions.SubjectKeys(frozenset({3}), frozenset()), "restriction")
    holds = LegalHolds(rt.ledger)
    holds.add(SUBJECT, "litigation 2026-1", "ops", account_ids=[4], now=NOW - timedelta(days=1))
    holds.add(
        SUBJECT,
        "litigation 2026-2",
        "ops",
        key_hash=email_hold_hash(HELD_VISITOR, rt.hash_secret),
        now=NOW - timedelta(days=1),
    )
    holds.add(COLLECTION, "regulator inquiry", "ops", collection="sms_messages", now=NOW - timedelta(days=1))
    holds.add(
        SUBJECT, "ended hold", "ops", account_ids=[1], until=NOW - timedelta(hours=1), now=NOW - timedelta(days=9)
    )
    # an erasure kept order 3 until next year, and quote 1... no: order 1's invoice 2 until yesterday
    rt.ledger.record_request("ERASE-1", "erasure", "GDPR", "f" * 64, NOW - timedelta(days=40), NOW)
    rt.registry.record_held(
        [
            HeldRow(
                "ERASE-1", "fabconnect_app", "orders", "3", ["total_eur"], "§147 AO", NOW + timedelta(days=300), "held"
            ),
            HeldRow(
                "ERASE-1", "fabconnect_app", "invoices", "2", ["net_eur"], "§147 AO", NOW - timedelta(days=1), "held"
            ),
        ]
    )
    return {
        "deleted": {
            "web_logs": {1, 5},  # 3 is a restricted subject's, deleted as its period ended; 4 is held
            "chatbot_transcripts": {1},
            "support_tickets": {1},
            "id_documents": {1},
            "quotes": {1, 4},
            "orders": {2},
            "invoices": {1, 2},  # 1 expired; 2 an erasure's leftover whose retain_until passed
            "suppression_list": {1},
        },
        "web_logs_restricted_deleted": {3},
        "anonymised": {"accounts": {2}},  # 3 restricted, 4 held
        "objects": {f"{p}/id/1.pdf", f"{p}/specs/1.step", f"{p}/specs/4.step"},
    }


def rows_of(rt: Runtime) -> dict[str, dict[Any, str]]:
    """Per table, row id -> digest of the whole row."""
    found = {}
    with rt.app_engine.connect() as conn:
        for t in s.metadata.sorted_tables:
            found[t.name] = {
                r[0]: hashlib.sha256(repr(tuple(r)).encode()).hexdigest()
                for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))
            }
    return found


def objects(rt: Runtime) -> set[str]:
    listed = rt.s3.list_objects_v2(Bucket="fabconnect-platform", Prefix=rt.prefix)  # type: ignore[attr-defined]
    return {o["Key"] for o in listed.get("Contents", [])}


def test_exactly_the_expired_rows_go_and_a_second_run_removes_nothing(rt):
    expected = build(rt)
    before, objects_before = rows_of(rt), objects(rt)
    planned = retention.plan(rt, NOW)
    assert rows_of(rt) == before  # the dry run touched nothing
    assert objects(rt) == objects_before
    applied = retention.apply(rt, NOW)
    checks = retention.check(rt, planned)
    assert checks["failures"] == 0
    after = rows_of(rt)
    gone = {t: set(before[t]) - set(after[t]) for t in before}
    want = dict(expected["deleted"])
    want["web_logs"] = want["web_logs"] | expected["web_logs_restricted_deleted"]
    assert {t: ids for t, ids in gone.items() if ids} == want
    changed = {t: {i for i in after[t] if after[t][i] != before[t][i]} for t in after}
    assert {t: ids for t, ids in changed.items() if ids} == expected["anonymised"]
    assert objects_before - objects(rt) == expected["objects"]
    # what the dry run said is what the run did
    for name, counts in planned["collections"].items():
        did = applied["collections"][name]
        assert (counts["deleted"], counts["anonymised"]) == (did["deleted"], did["anonymised"]), name
        assert counts["held_leftovers_due"] == did["held_leftovers_deleted"], name
    assert planned["collections"]["sms_messages"]["held"] == 1
    assert planned["collections"]["quotes"]["kept_referenced"] == 1
    assert planned["collections"]["accounts"]["kept_restricted"] == 1
    assert applied["held_leftovers"] == {
        "deleted": 1,
        "kept_referenced": 0,
        "held": 0,
        "by_collection": {"invoices": 1},
    }
    assert applied["collections"]["invoices"]["held_leftovers_deleted"] == 1
    assert [r.row_key for r in rt.registry.held()] == ["3"]  # the order kept until next year
    # the anonymised account: personal fields gone, the email a keyed hash, found no more
    with rt.app_engine.connect() as conn:
        ben = conn.execute(sa.select(s.accounts).where(s.accounts.c.id == 2)).one()
    assert ben.first_name is None
    assert ben.last_login_at is None
    assert ben.email.startswith("hash:")
    assert ben.country == "DE"  # not personal: kept
    # a second run removes nothing
    again = retention.apply(rt, NOW)
    assert rows_of(rt) == after
    assert all(c["deleted"] == 0 and c["anonymised"] == 0 for c in again["collections"].values())
    seq = retention.record(rt, planned, applied, checks, "run-1")
    last = retention.last_run(rt.ledger)
    assert last is not None
    assert last["run_id"] == "run-1"
    assert last["collections"]["web_logs"]["deleted"] == 3
    assert rt.ledger.verify_chain().ok
    assert seq == rt.ledger.events()[-1].seq


def test_the_checks_fail_when_a_held_row_changed_or_an_expired_row_is_left(rt):
    build(rt)
    planned = retention.plan(rt, NOW)
    retention.apply(rt, NOW)
    with rt.app_engine.begin() as conn:  # somebody edits a held row during the run
        conn.execute(s.web_logs.update().where(s.web_logs.c.id == 4).values(path="/edited"))
    with pytest.raises(CheckFailedError, match="web_logs"):
        retention.check(rt, planned)
    planned = retention.plan(rt, NOW)
    with rt.app_engine.begin() as conn:  # an expired row appears that the run did not remove
        conn.execute(
            s.web_logs.insert().values(
                id=99, account_id=1, ip_address="1", user_agent="u", path="/", requested_at=ago(days=300)
            )
        )
    with pytest.raises(CheckFailedError, match="web_logs"):
        retention.check(rt, planned)


def test_a_legal_hold_keeps_an_erasure_leftover_past_its_date_and_a_held_collection_keeps_its_parents(rt):
    build(rt)
    holds = LegalHolds(rt.ledger)
    holds.add(SUBJECT, "audit of account 1", "ops", account_ids=[1], now=NOW - timedelta(days=1))
    holds.add(COLLECTION, "invoices under tax audit", "ops", collection="invoices", now=NOW - timedelta(days=1))
    before = rows_of(rt)
    retention.apply(rt, NOW)
    after = rows_of(rt)
    assert set(after["invoices"]) == {1, 2}  # the held collection, and the leftover of a held account
    assert [r.row_key for r in rt.registry.held()] == ["2", "3"]  # not marked deleted
    assert 2 in after["orders"]  # an invoice the hold keeps still points at it: kept
    assert after["invoices"] == before["invoices"]


def test_small_batches_give_the_same_result(rt):
    build(rt)
    retention.apply(rt, NOW, batch=1)
    batched = rows_of(rt)
    assert set(batched["web_logs"]) == {2, 4}
    assert set(batched["quotes"]) == {2, 3}


def test_periods_are_counted_on_the_calendar():
    assert minus_period(datetime(2028, 2, 29, 12, tzinfo=UTC), "P8Y") == datetime(2020, 2, 29, 12, tzinfo=UTC)
    assert minus_period(datetime(2027, 2, 28, tzinfo=UTC), "P1Y") == datetime(2026, 2, 28, tzinfo=UTC)
    assert minus_period(datetime(2026, 3, 31, tzinfo=UTC), "P1M") == datetime(2026, 2, 28, tzinfo=UTC)
    assert minus_period(datetime(2026, 12, 1, tzinfo=UTC), "P90D") == datetime(2026, 9, 2, tzinfo=UTC)
    assert minus_period(datetime(2026, 12, 1, tzinfo=UTC), "P0D") == datetime(2026, 12, 1, tzinfo=UTC)


def test_a_personal_collection_without_a_retention_rule_is_refused():
    import yaml

    from include import settings
    from include.dsr.core.data_map import parse_data_map
    from include.dsr.core.errors import DataMapError

    raw = yaml.safe_load(settings.DATA_MAP_PATH.read_text())
    app = next(x for x in raw["systems"] if x["key"] == "fabconnect_app")
    del next(c for c in app["collections"] if c["name"] == "web_logs")["retention"]
    with pytest.raises(DataMapError, match=r"web_logs\]: a personal collection needs a 'retention' block"):
        parse_data_map(raw)
    raw = yaml.safe_load(settings.DATA_MAP_PATH.read_text())
    app = next(x for x in raw["systems"] if x["key"] == "fabconnect_app")
    next(c for c in app["collections"] if c["name"] == "web_logs")["retention"]["timestamp_field"] = "visited"
    with pytest.raises(DataMapError, match=r"\['visited'\] are not fields of web_logs"):
        parse_data_map(raw)


def test_the_products_own_copies_go_once_they_have_served(rt):
    later = datetime.now(UTC) + timedelta(days=40)  # objects written now are 40 days old then
    s3, bucket = rt.s3, rt.exports_bucket
    for key in (
        "REQ-OLD/package.zip",
        "_keys/REQ-OLD.txt",
        "REQ-LIVE/package.zip",
        "_staging/REQ-OLD/subjects.json",
        "_staging/REQ-OPEN/subjects.json",
        "_staging/WAVE-1/subjects.json",
        "_dry_runs/REQ-X/report.json",
    ):
        s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
    received = datetime.now(UTC) - timedelta(days=1)
    for rid in ("REQ-OLD", "REQ-LIVE", "REQ-OPEN"):
        rt.ledger.record_request(rid, "access", "GDPR", "f" * 64, received, received + timedelta(days=30))
    rt.ledger.set_package("REQ-OLD", "s3://x/REQ-OLD/package.zip", datetime.now(UTC) + timedelta(days=7))
    rt.ledger.set_package("REQ-LIVE", "s3://x/REQ-LIVE/package.zip", later + timedelta(days=1))
    rt.ledger.close_request("REQ-OLD", "completed", datetime.now(UTC), "done", outcome="data_provided")
    planned = retention.plan(rt, later)
    assert planned["own_copies"] == {"packages": 1, "staging": 2, "dry_runs": 1}
    retention.apply(rt, later)
    left = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert left == {"REQ-LIVE/package.zip", "_staging/REQ-OPEN/subjects.json"}
    assert rt.ledger.get_request("REQ-OLD").package_uri  # the ledger's facts stay


def _date(value) -> date:
    return value if isinstance(value, date) else value.date()


def test_cutoffs_to_the_second_and_to_the_day(rt):
    """A moment clock: a row one second inside its period stays, one second outside goes. A day
    clock (invoice dates): the anniversary day is kept through that day, the day before goes."""
    cutoff = minus_period(NOW, "P90D").replace(tzinfo=None)
    anniversary = minus_period(NOW, "P8Y").date()
    base = {"account_id": None, "ip_address": "1", "user_agent": "u", "path": "/"}
    inv = {"account_id": 1, "billing_name": "A", "billing_address": "S", "net_eur": 1, "tax_eur": 0}
    acc = {"id": 1, "role": "customer", "email": "a@example.com", "country": "DE", "created_at": N, "last_login_at": N}
    q = {"id": 1, "account_id": 1, "process": "p", "material": "m", "quantity": 1, "price_eur": 1, "created_at": N}
    with rt.app_engine.begin() as conn:
        conn.execute(s.manufacturing_partners.insert(), [{"id": 1, "slug": "p", "legal_name": "P", "country": "DE"}])
        conn.execute(s.accounts.insert(), [acc])
        conn.execute(s.quotes.insert(), [{**q, "spec_object_key": "k"}])
        conn.execute(
            s.orders.insert(),
            [
                {
                    "id": 1,
                    "account_id": 1,
                    "quote_id": 1,
                    "partner_id": 1,
                    "status": "x",
                    "total_eur": 1,
                    "ordered_at": N,
                }
            ],
        )
        conn.execute(
            s.web_logs.insert(),
            [
                {**base, "id": 1, "requested_at": cutoff - timedelta(seconds=1)},
                {**base, "id": 2, "requested_at": cutoff + timedelta(seconds=1)},
            ],
        )
        conn.execute(
            s.invoices.insert(),
            [
                {**inv, "id": 1, "order_id": 1, "invoice_number": "A", "issued_at": anniversary - timedelta(days=1)},
                {**inv, "id": 2, "order_id": 1, "invoice_number": "B", "issued_at": anniversary},
            ],
        )
    retention.apply(rt, NOW)
    left = rows_of(rt)
    assert set(left["web_logs"]) == {2}
    assert set(left["invoices"]) == {2}


def test_sparse_keys_cost_one_batch_per_range_with_rows(rt):
    base = {"account_id": None, "ip_address": "1", "user_agent": "u", "path": "/", "requested_at": ago(days=200)}
    with rt.app_engine.begin() as conn:
        conn.execute(
            s.web_logs.insert(), [{**base, "id": 1}, {**base, "id": 2_000_000_000}, {**base, "id": 2_000_000_001}]
        )
    applied = retention.apply(rt, NOW, batch=1000)
    assert applied["collections"]["web_logs"]["deleted"] == 3
    assert applied["collections"]["web_logs"]["batches"] == 2


def test_a_row_two_erasures_kept_is_one_row_deleted_and_both_entries_closed(rt):
    build(rt)
    rt.ledger.record_request("ERASE-2", "erasure", "GDPR", "f" * 64, NOW - timedelta(days=30), NOW)
    rt.registry.record_held(
        [HeldRow("ERASE-2", "fabconnect_app", "invoices", "2", ["net_eur"], "§147 AO", NOW - timedelta(days=2), "held")]
    )
    planned = retention.plan(rt, NOW)
    applied = retention.apply(rt, NOW)
    assert planned["collections"]["invoices"]["held_leftovers_due"] == 1
    assert applied["collections"]["invoices"]["held_leftovers_deleted"] == 1
    assert [(r.request_id, r.row_key) for r in rt.registry.held()] == [("ERASE-1", "3")]
