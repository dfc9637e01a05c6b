"""Identity classes the demo generator never makes, with the same answer on every backend.

A small platform DB written on purpose: capital non-ASCII letters, decomposed (NFD) accents,
tabs, no-break and zero-width spaces around addresses, ``ß`` next to ``ss``, phones typed in
national and punctuated forms, one number written two ways by two accounts. Every case runs on
SQLite, on PostgreSQL (the test database, C.UTF-8), on a PostgreSQL database whose collation is
``C`` (``lower()`` folds ASCII only there) and on one with the ICU provider, and must give the
same accounts and rows everywhere. The lookups the engine issues must use the indexes.
"""

from __future__ import annotations

import os
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa

from include.demo import app_schema
from include.dsr.connectors.sql_database import SqlDatabaseConnector
from include.dsr.core.data_map import load_data_map
from include.dsr.core.identities import normalize_email, normalize_phone
from include.dsr.identity.matching import link_columns, where_any
from include.dsr.identity.resolver import IdentityResolver, SubjectQuery
from tests.conftest import POSTGRES_URL_ENV

SECRET = "test-secret"
T0 = datetime(2026, 11, 1, 9, 0)
NFD = lambda text: unicodedata.normalize("NFD", text)

ACCOUNTS = [
    # id, email as stored, phone as stored (accounts.phone is free text)
    (1, "ÄNNE.MÜLLER@EXAMPLE.DE", "+49 151 2345678"),
    (2, "anne.muller@example.de", "+49 151 2345679"),
    (3, NFD("ZOË@EXÄMPLE.DE"), "0151/9876543"),
    (4, "tab.trailing@example.com\t", "+44 20 7946 0000"),
    (5, "\u00a0nbsp.lead@example.com\u200b", None),
    (6, "line.one@example.com", "+49 30 1234567"),
    (7, "line.two@example.com", "030 1234567"),
    (8, "straße@example.de", None),
    (9, "strasse@example.de", None),
    (10, "ŁUKASZ@PRZYKŁAD.PL", "(+48) 22-100-00-07"),
    (11, "ΟΔΥΣΣΕΑΣ@EXAMPLE.GR", None),  # Python lowers the last Σ to ς, glibc to σ, SQLite keeps Σ
    (12, "İPEK@ÖRNEK.TR", None),  # İ lowers to two characters (i + combining dot), or to i
    (13, "MAR\u212a@example.com", None),  # the Kelvin sign, which lowers to an ASCII k
    (14, "Zoe\u0308@EXÄMPLE.ORG", "+49\u00a0151\u2013111 222 33"),  # one letter decomposed, one not; en dash
]
TICKETS = [
    # id, account_id, contact_email as stored
    (1, None, "  änne.müller@example.de "),
    (2, None, NFD("Änne.Müller@Example.DE")),
    (3, None, "anne.muller@example.de"),
    (4, 3, "someone.else@example.com"),
    (5, None, "Zoë@Exämple.de\n"),
    (6, None, "STRASSE@example.de"),
]
SMS = [(1, "+491512345678"), (2, "+491519876543"), (3, "+4930 1234567")]
CHATS = [
    (1, None, "0151 234 5678"),
    (2, None, "+49 (0)151 987 65 43"),
    (3, "ŁUKASZ@PRZYKŁAD.PL ", None),
    (4, None, "[0151]\u2011111\u202f222\u221233"),  # non-breaking hyphen, narrow no-break space, minus sign
]

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    *[
        pytest.param(
            name,
            id=name,
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(not os.environ.get(POSTGRES_URL_ENV), reason=f"{POSTGRES_URL_ENV} is not set"),
            ],
        )
        for name in ("postgres", "postgres-c-collation", "postgres-icu")
    ],
]
DATABASES = {
    "postgres-c-collation": ("dsr_test_c", "LC_COLLATE 'C' LC_CTYPE 'C'"),
    "postgres-icu": ("dsr_test_icu", "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"),
}


def _database(kind: str) -> str:
    """URL of the PostgreSQL database for ``kind``, created once with its collation."""
    base = sa.make_url(os.environ[POSTGRES_URL_ENV])
    if kind == "postgres":
        return base.render_as_string(hide_password=False)
    name, options = DATABASES[kind]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar():
            conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' {options}")
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
def platform(request, tmp_path) -> Iterator[sa.Engine]:
    """The crafted platform DB on one backend (a fresh schema on PostgreSQL)."""
    schema = None
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.sqlite'}")
    else:
        url = sa.make_url(_database(request.param))
        schema = f"t_{uuid.uuid4().hex[:10]}"
        with sa.create_engine(url).begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        engine = sa.create_engine(url.update_query_dict({"options": f"-csearch_path={schema}"}))
    app_schema.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            app_schema.accounts.insert(),
            [
                {
                    "id": i,
                    "role": "customer",
                    "email": e,
                    "phone": p,
                    "country": "DE",
                    "created_at": T0,
                    "first_name": "x",
                    "last_name": "y",
                }
                for i, e, p in ACCOUNTS
            ],
        )
        conn.execute(
            app_schema.support_tickets.insert(),
            [
                {
                    "id": i,
                    "account_id": a,
                    "contact_email": e,
                    "subject": "s",
                    "body": "b",
                    "created_at": T0,
                    "status": "open",
                }
                for i, a, e in TICKETS
            ],
        )
        conn.execute(
            app_schema.sms_messages.insert(),
            [{"id": i, "phone": p, "direction": "inbound", "body": "b", "sent_at": T0} for i, p in SMS],
        )
        conn.execute(
            app_schema.chatbot_transcripts.insert(),
            [
                {"id": i, "visitor_email": e, "visitor_phone": p, "started_at": T0, "transcript": "t"}
                for i, e, p in CHATS
            ],
        )
    yield engine
    if schema:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    engine.dispose()


def _resolve(engine, **identities):
    query = SubjectQuery("req-1", **identities)
    (subject,) = IdentityResolver(engine, load_data_map(), SECRET).resolve([query])
    return subject


def _rows(engine, subject) -> dict[str, set[int]]:
    system = load_data_map().system("fabconnect_app")
    wanted = [system.collection(n) for n in ("support_tickets", "sms_messages", "chatbot_transcripts")]
    result = SqlDatabaseConnector(system, engine=engine).export([subject], wanted)
    return {name: {int(i) for i in frame["id"]} for name, frame in result.frames.items()}


@pytest.mark.parametrize(
    ("written", "accounts", "tickets"),
    [
        pytest.param("änne.müller@example.de", {1}, {1, 2}, id="capital non-ASCII letters stored"),
        pytest.param("ÄNNE.Müller@Example.DE", {1}, {1, 2}, id="request in capitals"),
        pytest.param(NFD("änne.müller@example.de"), {1}, {1, 2}, id="request decomposed (NFD)"),
        pytest.param("anne.muller@example.de", {2}, {3}, id="the ASCII near-duplicate stays apart"),
        pytest.param("zoë@exämple.de", {3}, {4, 5}, id="stored decomposed and in capitals"),
        pytest.param("tab.trailing@example.com", {4}, set(), id="stored with a trailing tab"),
        pytest.param("nbsp.lead@example.com", {5}, set(), id="no-break and zero-width spaces"),
        pytest.param("straße@example.de", {8}, set(), id="ß is not ss"),
        pytest.param("STRASSE@EXAMPLE.DE", {9}, {6}, id="ss is not ß"),
        pytest.param("łukasz@przykład.pl", {10}, set(), id="letters without decomposition (Ł)"),
        pytest.param("Οδυσσεας@example.gr", {11}, set(), id="capital sigma stored, final sigma asked"),
        pytest.param("İPEK@ÖRNEK.TR", {12}, set(), id="dotted capital I (two-character lower case)"),
        pytest.param("mark@example.com", {13}, set(), id="Kelvin sign stored for k"),
        pytest.param("zoë@exämple.org", {14}, set(), id="composed and decomposed in one address"),
        pytest.param("nobody@example.com", set(), set(), id="an unknown address finds nothing"),
    ],
)
def test_emails_match_exactly_on_every_backend(platform, written, accounts, tickets):
    subject = _resolve(platform, email=normalize_email(written))
    assert subject.account_ids == accounts
    assert _rows(platform, subject)["support_tickets"] == tickets


@pytest.mark.parametrize(
    ("written", "region", "accounts", "sms", "chats"),
    [
        pytest.param("0151 2345678", None, {1}, {1}, {1}, id="German national format, controller's region"),
        pytest.param("0049 151 2345678", None, {1}, {1}, {1}, id="international prefix 00"),
        pytest.param("+49 (0)151-234 5678", None, {1}, {1}, {1}, id="punctuated, with (0)"),
        pytest.param("01519876543", None, {3}, {2}, {2}, id="national digits, stored with a slash"),
        pytest.param("22 100 00 07", "PL", {10}, set(), {3}, id="national format of another region"),
        pytest.param("030 1234567", None, set(), set(), set(), id="a number two accounts hold links nobody"),
        pytest.param("0151 111 22233", None, {14}, set(), {4}, id="Unicode dashes, brackets, narrow spaces"),
    ],
)
def test_phones_compare_as_e164_on_every_backend(platform, written, region, accounts, sms, chats):
    phone = normalize_phone(written, region)
    subject = _resolve(platform, phone=phone)
    assert subject.account_ids == accounts
    rows = _rows(platform, subject)
    assert rows["sms_messages"] == sms
    assert rows["chatbot_transcripts"] == chats


def test_a_shared_line_written_two_ways_is_ambiguous(platform):
    subject = _resolve(platform, email="line.one@example.com")
    assert subject.account_ids == {6}
    assert subject.phones == set()
    assert subject.ambiguous_phones == {"+49301234567"}
    assert _rows(platform, subject)["sms_messages"] == set()  # the company line's SMS belong to nobody


@pytest.mark.parametrize(
    ("identities", "verified", "conflicts", "ignored"),
    [
        pytest.param(
            {"email": "änne.müller@example.de", "phone": "+441234567890"},
            {"email"},
            set(),
            {"phone"},
            id="unverified phone of nobody: ignored, no conflict",
        ),
        pytest.param(
            {"email": "änne.müller@example.de", "phone": "+442079460000"},
            {"email"},
            {"phone"},
            {"phone"},
            id="unverified phone of another account: conflict",
        ),
        pytest.param(
            {"email": "änne.müller@example.de", "phone": "+491512345678"},
            {"email", "phone"},
            set(),
            set(),
            id="both verified and the same person",
        ),
        pytest.param(
            {"account_id": 1, "email": "anne.muller@example.de"},
            {"account_id", "email"},
            {"email"},
            set(),
            id="session account and another account's email: conflict",
        ),
        pytest.param(
            {"email": "nobody@example.com", "phone": "+491519876543"},
            {"email"},
            {"phone"},
            {"phone"},
            id="verified address of nobody, phone of an account: conflict",
        ),
        pytest.param(
            {"email": "änne.müller@example.de", "phone": "+49301234567"},
            {"email", "phone"},
            {"phone"},
            set(),
            id="another company's shared line: conflict",
        ),
        pytest.param(
            {"email": "line.two@example.com", "phone": "+49301234567"},
            {"email", "phone"},
            set(),
            set(),
            id="the subject's own shared line: no conflict",
        ),
    ],
)
def test_only_the_verified_identity_links_accounts(platform, identities, verified, conflicts, ignored):
    subject = _resolve(platform, verified=frozenset(verified), **identities)
    assert subject.conflicts == conflicts
    assert subject.ignored == ignored
    if conflicts:
        assert subject.account_ids == set()
        assert not subject.found  # nothing is merged, nothing would be gathered


def test_every_lookup_stays_on_an_index(platform):
    """EXPLAIN of the lookups the connectors issue: index searches, with sequential scans forbidden
    on PostgreSQL (tiny tables would otherwise be scanned by choice, not by need)."""
    system = load_data_map().system("fabconnect_app")
    sample = {"email": "änne.müller@example.de", "phone": "+491512345678", "account_id": 1, "email_hash": "ab"}
    sqlite = platform.dialect.name == "sqlite"
    with platform.connect() as conn:
        if not sqlite:
            conn.exec_driver_sql("SET enable_seqscan = off")
        for coll in system.collections:
            for link in link_columns(coll):
                t = sa.table(coll.name, *(sa.column(f) for f in coll.field_names))
                statement = sa.select(t).where(where_any(t, [link], {link.identity: {sample[link.identity]}}))
                sql = str(statement.compile(dialect=platform.dialect, compile_kwargs={"literal_binds": True}))
                rows = conn.exec_driver_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + sql)
                plan = " ".join(str(r[-1] if sqlite else r[0]) for r in rows)
                where = f"{coll.name}.{link.name}: {plan}"
                assert "Index" in plan or "USING" in plan, where
                assert "Seq Scan" not in plan, where
                assert f"SCAN {coll.name}" not in plan, where


SESSION = {"verified": frozenset({"account_id", "email"}), "bound_to_anchor": frozenset({"email"})}


@pytest.mark.parametrize(
    ("email", "ignored", "emails"),
    [
        pytest.param("änne.müller@example.de", set(), {"änne.müller@example.de"}, id="the account's login email"),
        pytest.param("nobody@example.com", {"email"}, {"änne.müller@example.de"}, id="an email of no account"),
    ],
)
def test_a_session_proves_only_its_own_accounts_email(platform, email, ignored, emails):
    """A logged-in session with account 1 and an email typed in: only account 1's own counts."""
    subject = _resolve(platform, account_id=1, email=email, **SESSION)
    assert subject.conflicts == set()
    assert subject.ignored == ignored
    assert subject.emails == emails  # the typed-in address finds no visitor's chats or tickets


def test_two_requests_of_one_account_in_a_batch_both_get_its_recipients(platform):
    with platform.begin() as conn:
        conn.execute(
            app_schema.payment_methods.insert(),
            [
                {
                    "id": 1,
                    "account_id": 1,
                    "processor": "paystream",
                    "processor_token": "tok-1",
                    "brand": "visa",
                    "last4": "4242",
                    "exp_month": 1,
                    "exp_year": 2030,
                },
            ],
        )
    queries = [SubjectQuery("req-a", account_id=1), SubjectQuery("req-b", email="änne.müller@example.de")]
    first, second = IdentityResolver(platform, load_data_map(), SECRET).resolve(queries)
    assert first.account_ids == second.account_ids == {1}
    assert first.recipients == second.recipients == {"paystream"}
