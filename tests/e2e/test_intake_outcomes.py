"""What a request's intake decides, end to end with dag.test() against the demo world.

* identities of two different people: nothing is gathered, ops decide (answered here through
  the HITL task, as in the Required Actions UI): the verified identity alone, or a refusal;
* a subject added outside the generator: capital and decomposed non-ASCII letters, a tab and a
  no-break space around stored addresses, a phone in national and punctuated forms, an
  internationalised address that needs SMTPUTF8 (and a server without it: failed, with a reason);
* nothing found is its own outcome; a manual partner that refused makes the answer "completed
  with exceptions"; a dry run touches nothing; a partner that quotes identities in its errors
  leaves none in the ledger.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import datetime

import pytest
import sqlalchemy as sa

from include import constants
from include.demo import app_schema
from include.demo.partners.faults import Faults
from include.demo.smtp_sink import SmtpSink, read_mail
from include.dsr.rights.intake import PROCEED_VERIFIED_ONLY, REFUSE_CONFLICT
from tests.e2e.conftest import run_dag
from tests.e2e.helpers import (
    HARD,
    VERIFIED_ALL,
    conf_for,
    expected_rows,
    gathered_rows,
    ledger,
    manual_partners,
    package_data,
    package_keys,
    people_without_manual_partner,
)
from tests.e2e.hitl import HitlResponder
from tests.support import free_port, smtp_connection

pytestmark = pytest.mark.slow

EMAIL_LINK = {"method": "email_link", "verified_at": "2026-11-20T10:00:00Z"}


def _events(request_id: str) -> dict[str, dict]:
    return {e.event_type: e.payload for e in ledger().events(request_id)}


def _mails(request_id: str) -> list:
    return [m for m in read_mail() if request_id in m["Subject"]]


def test_identities_of_two_people_stop_for_ops_who_go_on_with_the_verified_one(airflow_db, demo_world):
    """H03's address with H04's phone: H04's data is neither gathered nor asked of H04's partners."""
    request_id = "E2E-CONFLICT-PROCEED"
    conf = {
        "request_id": request_id,
        "verification": EMAIL_LINK,
        "subject": {"email": HARD["H03"].email, "phone": HARD["H04"].phone},
    }
    with HitlResponder("dsr_access", {"decide_identity": ([PROCEED_VERIFIED_ONLY], {})}) as ops:
        run = run_dag("dsr_access", conf, approve="confirm_manual_partner")
    assert run.state == "success"
    assert [a[0] for a in ops.answered] == ["decide_identity"]
    events = _events(request_id)
    assert events["identity.conflict"]["conflicting_identity_types"] == ["phone"]
    assert events["identity.decided"]["decision"] == "verified_identity_only"
    rows, _ = gathered_rows(package_data(demo_world.s3, request_id))
    assert rows == expected_rows(demo_world.paths, "H03", systems_excluded=manual_partners())
    assert not rows & expected_rows(demo_world.paths, "H04")


def test_identities_of_two_people_refused_by_ops_tell_the_subject_why(airflow_db, demo_world):
    request_id = "E2E-CONFLICT-REFUSE"
    conf = {
        "request_id": request_id,
        "verification": EMAIL_LINK,
        "subject": {"email": HARD["H01"].email, "phone": HARD["H02"].phone},
    }
    reason = "The phone number you gave belongs to another customer."
    with HitlResponder("dsr_access", {"decide_identity": ([REFUSE_CONFLICT], {"reason": reason})}):
        run = run_dag("dsr_access", conf, approve="confirm_manual_partner")
    assert run.state == "success"
    row = ledger().get_request(request_id)
    assert (row.status, row.outcome) == ("refused", "refused")
    assert not package_keys(demo_world.s3, request_id)
    refusal = [m for m in _mails(request_id) if "refus" in m["Subject"].lower() or "cannot" in m["Subject"].lower()]
    body = (refusal or _mails(request_id))[-1].get_body(("html", "plain")).get_content()
    assert "belongs to another customer" in body
    assert "supervisory authority" in body


CRAFTED_EMAIL = "Änne.Ørsted@Exämple.DE"
CRAFTED_PHONE_NATIONAL = "0151 2345678"  # the person writes it nationally; the account stored it spaced


@pytest.fixture(scope="module")
def crafted_subject(demo_world):
    """A customer the generator never makes, added to the demo world's platform DB: odd forms of
    every identity, and one order made by the manual-channel partner Forge & Weld."""
    engine = sa.create_engine(demo_world.paths.app_url)
    now = datetime(2026, 11, 1, 9, 0)
    spec_key = "specs/900001/part-900001.step"
    demo_world.s3.put_object(Bucket=constants.PLATFORM_BUCKET, Key=spec_key, Body=b"ISO-10303-21;")
    with engine.begin() as conn:
        forge = conn.execute(
            sa.select(app_schema.manufacturing_partners.c.id).where(
                app_schema.manufacturing_partners.c.slug == "forge-and-weld-ltd"
            )
        ).scalar_one()
        conn.execute(
            app_schema.accounts.insert().values(
                id=900001,
                role="customer",
                first_name="Änne",
                last_name="Ørsted",
                email=unicodedata.normalize("NFD", CRAFTED_EMAIL.upper()) + "\t",
                phone="+49 (0)151 234 5678",
                country="DE",
                created_at=now,
            )
        )
        conn.execute(
            app_schema.support_tickets.insert(),
            [
                {
                    "id": 900001,
                    "account_id": None,
                    "contact_email": "\u00a0änne.ørsted@exämple.de\u200b",
                    "subject": "s",
                    "body": "b",
                    "created_at": now,
                    "status": "open",
                },
                {
                    "id": 900002,
                    "account_id": None,
                    "contact_email": "anne.orsted@example.de",  # a near-duplicate
                    "subject": "s",
                    "body": "b",
                    "created_at": now,
                    "status": "open",
                },
            ],
        )
        conn.execute(
            app_schema.sms_messages.insert().values(
                id=900001, phone="+491512345678", direction="inbound", body="hello", sent_at=now
            )
        )
        conn.execute(
            app_schema.quotes.insert().values(
                id=900001,
                account_id=900001,
                created_at=now,
                process="cnc_milling",
                material="PA12",
                quantity=1,
                price_eur=10,
                spec_object_key=spec_key,
            )
        )
        conn.execute(
            app_schema.orders.insert().values(
                id=900001,
                account_id=900001,
                quote_id=900001,
                partner_id=forge,
                status="delivered",
                total_eur=10,
                ordered_at=now,
            )
        )
    engine.dispose()
    return {
        "accounts": {"900001"},
        "support_tickets": {"900001"},
        "sms_messages": {"900001"},
        "quotes": {"900001"},
        "orders": {"900001"},
    }


def test_a_subject_written_every_odd_way_is_found_and_mailed_with_smtputf8(airflow_db, demo_world, crafted_subject):
    request_id = "E2E-CRAFTED-1"
    conf = {
        "request_id": request_id,
        "verification": VERIFIED_ALL,
        "subject": {"email": CRAFTED_EMAIL.lower(), "phone": CRAFTED_PHONE_NATIONAL},
    }
    assert run_dag("dsr_access", conf).state == "success"
    rows, _ = gathered_rows(package_data(demo_world.s3, request_id))
    found = {collection: {i for s, c, i in rows if c == collection} for collection in crafted_subject}
    assert found == crafted_subject
    mails = _mails(request_id)
    assert len(mails) == 2
    assert {m["To"] for m in mails} == {CRAFTED_EMAIL.lower()}


def test_an_address_the_mail_server_cannot_take_fails_the_request_with_the_reason(
    airflow_db, demo_world, crafted_subject, monkeypatch, tmp_path
):
    old_server = SmtpSink(port=free_port(), mail_dir=tmp_path / "mail", smtputf8=False).start()
    monkeypatch.setenv("AIRFLOW_CONN_DSR_SMTP", smtp_connection(old_server.port))
    try:
        request_id = "E2E-NO-SMTPUTF8"
        conf = {"request_id": request_id, "verification": EMAIL_LINK, "subject": {"email": CRAFTED_EMAIL.lower()}}
        run = run_dag("dsr_access", conf)
    finally:
        old_server.stop()
    assert run.state == "failed"
    row = ledger().get_request(request_id)
    assert row.status == "failed"  # not left in_progress without an outcome
    assert "SMTPUTF8" in row.outcome_summary
    assert old_server.messages() == []


def test_nothing_found_is_answered_as_no_personal_data_found(airflow_db, demo_world):
    request_id = "E2E-NOTHING-1"
    conf = {"request_id": request_id, "verification": EMAIL_LINK, "subject": {"email": "never.seen@example.net"}}
    assert run_dag("dsr_access", conf).state == "success"
    row = ledger().get_request(request_id)
    assert (row.status, row.outcome, row.outcome_summary) == (
        "completed",
        "no_personal_data_found",
        "no personal data found",
    )
    completion = _mails(request_id)[-1].get_body(("html", "plain")).get_content()
    assert "We hold no personal data about you" in completion


def test_a_manual_partner_that_refused_completes_with_exceptions(airflow_db, demo_world, crafted_subject):
    from include.dsr.connectors.partner_manual import REFUSED
    from include.dsr.evidence.bundle import build_evidence

    request_id = "E2E-MANUAL-REFUSED"
    conf = {"request_id": request_id, "verification": EMAIL_LINK, "subject": {"email": CRAFTED_EMAIL.lower()}}
    with HitlResponder("dsr_access", {"confirm_manual_partner": ([REFUSED], {"record_count": 0})}) as ops:
        run = run_dag("dsr_access", conf, approve="confirm_identity")
    assert [a[0] for a in ops.answered] == ["confirm_manual_partner"]
    assert run.state == "success"
    row = ledger().get_request(request_id)
    assert (row.status, row.outcome) == ("completed", "completed_with_exceptions")
    assert "not confirmed by forge-and-weld-ltd" in row.outcome_summary
    completion = _mails(request_id)[-1].get_body(("html", "plain")).get_content()
    assert "Forge &amp; Weld Ltd" in completion or "Forge & Weld Ltd" in completion
    evidence = build_evidence(ledger(), request_id, now=row.closed_at)
    assert evidence["response"]["outcome"] == "completed_with_exceptions"


def test_a_dry_run_counts_and_names_partners_but_touches_nothing(airflow_db, demo_world):
    person_key = people_without_manual_partner(demo_world.paths)[0]
    request_id = f"E2E-DRY-{person_key}"
    asked_before = {slug: sim.book.count() for slug, sim in demo_world.simulators.items()}
    mails_before = len(read_mail())
    run = run_dag("dsr_access", conf_for(person_key, request_id, dry_run=True))
    assert run.state == "success"
    assert ledger().get_request(request_id) is None  # not recorded as a request
    assert len(read_mail()) == mails_before  # no notice
    assert {slug: sim.book.count() for slug, sim in demo_world.simulators.items()} == asked_before
    assert not package_keys(demo_world.s3, request_id)
    report = json.loads(
        demo_world.s3.get_object(Bucket=constants.EXPORTS_BUCKET, Key=f"_dry_runs/{request_id}/report.json")[
            "Body"
        ].read()
    )
    internal = {r for r in expected_rows(demo_world.paths, person_key) if r[0] == "fabconnect_app"}
    assert {c: n for c, n in report["records"]["fabconnect_app"].items() if n} == _count_by_collection(internal)
    partners = {r[0] for r in expected_rows(demo_world.paths, person_key)} - {"fabconnect_app", "fabconnect_s3"}
    assert set(report["partners_that_would_be_asked"]) == partners
    noted = [e for e in ledger().events() if e.event_type == "dry_run.reported"]
    assert any(e.payload["request_id"] == request_id and e.request_id is None for e in noted)


def _count_by_collection(rows: set[tuple[str, str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, collection, _ in rows:
        counts[collection] = counts.get(collection, 0) + 1
    return counts


@pytest.mark.parametrize(
    "partner", [pytest.param("payflow", id="api"), pytest.param("anodize-lab-srl", id="s3_dropbox")]
)
def test_a_partner_quoting_identities_in_its_errors_leaves_none_in_the_ledger(
    airflow_db, demo_world, healthy_partners, partner
):
    person_key = next(
        k
        for k in people_without_manual_partner(demo_world.paths)
        if any(r[0] == partner for r in expected_rows(demo_world.paths, k))
    )
    healthy_partners[partner].faults = Faults(mode="leak")
    request_id = f"E2E-LEAK-{partner}"
    run = run_dag("dsr_access", conf_for(person_key, request_id, with_phone=True))
    assert run.state == "failed"
    person = HARD[person_key]
    texts = [r.outcome or "" for r in ledger().system_results(request_id)]
    texts += [ledger().get_request(request_id).outcome_summary or ""]
    texts += [e.payload_json for e in ledger().events(request_id)]
    blob = " ".join(texts).lower()
    assert "[redacted]" in blob  # the partner's words reached the ledger, cleaned
    for identity in (person.email.lower(), person.phone, person.phone.lstrip("+"), person.full_name.lower()):
        at = blob.find(identity)
        assert at < 0, blob[max(0, at - 160) : at + len(identity) + 40].replace(identity, "<IDENTITY>")
