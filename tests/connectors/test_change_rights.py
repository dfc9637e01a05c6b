"""Restriction, rectification and objection on the platform DB, SQLite and PostgreSQL, without Airflow.

The steps the DAGs run (``include.dsr.rights``), in order, against a generated world: the intake
as the DAGs do it, then the platform change, the checks and the close. Every processing path of
the product (the marketing send, the pricing refresh) skips a restricted subject and handles
everyone else; a lift without its recorded notice is refused; a rectified email is found by the
next request while a request received before still finds the subject under the old one; an
objection to direct marketing stops the next send; one on legitimate interests waits for ops.
Partners over their channels are the end-to-end tests' (``tests/e2e/test_change_rights.py``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from include.demo import app_schema
from include.demo.downstream import refresh_pricing_features, send_newsletter
from include.demo.people import hard_case_people
from include.demo.smtp_sink import read_mail
from include.demo.world import WorldPaths, build_world
from include.dsr.core.data_map import load_data_map
from include.dsr.core.errors import RequestValidationError, TerminalError
from include.dsr.core.identities import normalize_email
from include.dsr.identity.resolver import IdentityResolver, SubjectQuery
from include.dsr.ledger.api import Ledger
from include.dsr.processing import restrictions
from include.dsr.rights import intake, objection, rectification, restriction
from include.dsr.rights.runtime import Runtime
from tests.support import run_smtp_sink

HARD = {p.key: p for p in hard_case_people()}
VERIFIED = {"method": "email_link", "verified_at": "2026-11-20T10:00:00Z"}
RECEIVED = "2026-11-25T09:00:00Z"


@pytest.fixture
def world(db_url: str, tmp_path) -> Iterator[sa.Engine]:
    build_world(WorldPaths(tmp_path / "world", app_url=db_url), subjects=60, seed=33)
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def mail(tmp_path, monkeypatch):
    yield from run_smtp_sink(tmp_path, monkeypatch)


@pytest.fixture
def rt(world: sa.Engine, tmp_path, s3_factory, mail) -> Iterator[Runtime]:
    s3 = s3_factory()
    bucket = f"exports-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.create_schema()
    yield Runtime(data_map=load_data_map(), ledger=ledger, app_engine=world, s3=s3, exports_bucket=bucket)
    ledger.close()


def conf(person: str, request_id: str, **extra) -> dict:
    return {
        "request_id": request_id,
        "subject": {"email": HARD[person].email},
        "received_at": RECEIVED,
        "verification": VERIFIED,
        **extra,
    }


def take_in(rt: Runtime, run_conf: dict, right: str) -> None:
    """The intake as the DAGs run it: record, acknowledge, verification, resolve."""
    intake.start_request(rt, run_conf, right, f"run-{run_conf['request_id']}")
    intake.acknowledge(rt, run_conf, run_conf["request_id"])
    intake.record_verification(rt, run_conf, right)
    assert intake.resolve(rt, run_conf, right)["route"] == "proceed"


def account_of(engine: sa.Engine, person: str) -> int:
    (subject,) = IdentityResolver(engine, load_data_map(), "x").resolve(
        [SubjectQuery("q", email=normalize_email(HARD[person].email))]
    )
    (account,) = subject.account_ids
    return account


def opt_in(engine: sa.Engine, account_ids: list[int], secret: str) -> None:
    """Everyone named has said yes to the newsletter and is on no suppression list (the generator
    suppresses some people), so the send would reach them."""
    from include.dsr.core.pii import keyed_hash

    prefs, accounts, suppression = app_schema.marketing_preferences, app_schema.accounts, app_schema.suppression_list
    with engine.begin() as conn:
        emails = conn.execute(sa.select(accounts.c.email).where(accounts.c.id.in_(account_ids))).scalars()
        hashes = [keyed_hash(normalize_email(e), secret) for e in emails]
        conn.execute(suppression.delete().where(suppression.c.email_hash.in_(hashes)))
        have = set(conn.execute(sa.select(prefs.c.account_id)).scalars())
        for account_id in account_ids:
            if account_id in have:
                conn.execute(prefs.update().where(prefs.c.account_id == account_id).values(newsletter=True))
            else:
                conn.execute(
                    prefs.insert().values(
                        account_id=account_id, newsletter=True, product_updates=False, consent_source="test"
                    )
                )


def sent_to(engine: sa.Engine, campaign: str) -> set[int]:
    t = app_schema.marketing_sends
    with engine.connect() as conn:
        return set(conn.execute(sa.select(t.c.account_id).where(t.c.campaign == campaign)).scalars())


def pricing_rows(engine: sa.Engine) -> dict[int, tuple]:
    t = app_schema.pricing_features
    with engine.connect() as conn:
        return {r.account_id: tuple(r) for r in conn.execute(sa.select(t))}


def customers_with_quotes(engine: sa.Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(app_schema.quotes.c.account_id).distinct()).scalars())


def mails_about(request_id: str, mail) -> list:
    return [m for m in read_mail(mail.mail_dir) if request_id in str(m["Subject"])]


# -- restriction ----------------------------------------------------------------------------


def test_restriction_is_honoured_by_every_processing_path_and_lifted_only_after_the_notice(rt, world, mail):
    h01, h03 = account_of(world, "H01"), account_of(world, "H03")
    opt_in(world, [h01, h03], rt.hash_secret)
    run = conf("H01", "RESTRICT-H01", action="apply")
    take_in(rt, run, "restriction")
    targets = restriction.plan_restriction(rt, "RESTRICT-H01", "apply")
    assert {t["system"] for t in targets["partners"]} == HARD_RECIPIENTS(rt, "RESTRICT-H01")
    restriction.apply_platform(rt, "RESTRICT-H01")
    assert restriction.apply_platform(rt, "RESTRICT-H01")["added"] == 0  # a re-run adds nothing
    restriction.check_restriction(rt, "RESTRICT-H01", "apply")

    # the three ways to ask agree: the view, the set-based function, the one-subject function
    with world.connect() as conn:
        view = set(
            conn.execute(sa.text("SELECT account_id FROM dsr_restricted_accounts WHERE purpose = '*'")).scalars()
        )
    assert view == {h01}
    assert restrictions.restricted_accounts(world, "pricing") == {h01}
    secret = rt.hash_secret
    assert restrictions.is_restricted(world, secret, "marketing", account_id=h01)
    assert restrictions.is_restricted(world, secret, "analytics", email=normalize_email(HARD["H01"].email))
    assert restrictions.is_restricted(world, secret, "pricing", phone=HARD["H01"].phone)
    assert not restrictions.is_restricted(world, secret, "marketing", account_id=h03)

    # the marketing send and the pricing refresh skip the subject and handle everyone else
    sent = send_newsletter(world, secret, "nl-1")
    assert h01 not in sent_to(world, "nl-1")
    assert h03 in sent_to(world, "nl-1")
    assert sent["restricted"] == 1
    before = pricing_rows(world)
    refreshed = refresh_pricing_features(world, now=datetime(2026, 12, 2, 3, 0))
    after = pricing_rows(world)
    assert refreshed["restricted"] == (1 if h01 in customers_with_quotes(world) else 0)
    assert after.get(h01) == before.get(h01)  # stored, not processed
    changed = {a for a in customers_with_quotes(world) if after.get(a) != before.get(a)}
    assert changed == customers_with_quotes(world) - {h01}

    # access to the subject's own data still works while restricted (storage continues)
    for r in rt.ledger.system_results("RESTRICT-H01"):
        if r.system != "fabconnect_app":  # the partners confirm through their channels (e2e)
            rt.ledger.upsert_system_result("RESTRICT-H01", r.system, r.action, "completed")
    restriction.close_restriction(rt, "RESTRICT-H01", run, "apply")
    assert rt.ledger.get_request("RESTRICT-H01").outcome == "restricted"
    assert mails_about("RESTRICT-H01", mail)[-1]["Subject"].startswith("The processing of your data is restricted")

    # the lift: refused without the recorded notice, nothing cleared
    lift = conf("H01", "LIFT-H01", action="lift")
    take_in(rt, lift, "restriction")
    restriction.plan_restriction(rt, "LIFT-H01", "lift")
    with pytest.raises(TerminalError, match=r"Art\. 18\(3\)"):
        restriction.lift_platform(rt, "LIFT-H01")
    assert restrictions.restricted_accounts(world, "marketing") == {h01}
    restriction.notify_lift(rt, "LIFT-H01", lift)
    assert "will be lifted" in str(mails_about("LIFT-H01", mail)[-1]["Subject"])
    assert restriction.lift_platform(rt, "LIFT-H01")["lifted"] == len(restrictions.of_request(world, "RESTRICT-H01"))
    restriction.check_restriction(rt, "LIFT-H01", "lift")
    assert restrictions.restricted_accounts(world, "marketing") == set()
    assert all(r.lifted_by == "LIFT-H01" for r in _rows(world))  # history kept: stamped, not deleted
    send_newsletter(world, secret, "nl-2")
    assert h01 in sent_to(world, "nl-2")
    assert send_newsletter(world, secret, "nl-2")["sent"] == 0  # a second run of the day's campaign sends nothing


def HARD_RECIPIENTS(rt: Runtime, request_id: str) -> set[str]:
    subject = rt.staging(request_id).get_subjects()[0]
    return {s for s in subject.recipients if rt.data_map.system(s).channel != "manual"}


def _rows(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.select(restrictions.restrictions)).all()


def test_a_lift_with_nothing_in_force_is_refused_before_anything(rt, world):
    take_in(rt, conf("H03", "LIFT-NOTHING", action="lift"), "restriction")
    with pytest.raises(TerminalError, match="no restriction is in force"):
        restriction.plan_restriction(rt, "LIFT-NOTHING", "lift")
    assert rt.ledger.system_results("LIFT-NOTHING") == []


def test_a_lift_leaves_other_bases_in_force(rt, world):
    """An objection upheld for marketing is not ended by lifting a restriction."""
    take_in(rt, conf("H03", "OBJ-H03", purposes=["marketing"]), "objection")
    objection.plan_objection(rt, "OBJ-H03", conf("H03", "OBJ-H03", purposes=["marketing"]))
    objection.apply_immediate(rt, "OBJ-H03")
    take_in(rt, conf("H03", "RES-H03", action="apply"), "restriction")
    restriction.plan_restriction(rt, "RES-H03", "apply")
    restriction.apply_platform(rt, "RES-H03")
    lift = conf("H03", "LIFT-H03", action="lift")
    take_in(rt, lift, "restriction")
    restriction.plan_restriction(rt, "LIFT-H03", "lift")
    restriction.notify_lift(rt, "LIFT-H03", lift)
    restriction.lift_platform(rt, "LIFT-H03")
    h03 = account_of(world, "H03")
    assert restrictions.restricted_accounts(world, "pricing") == set()
    assert restrictions.restricted_accounts(world, "marketing") == {h03}


def test_a_lift_ends_rows_keyed_by_identities_it_did_not_resolve(rt, world):
    """Restricted under the old email, rectified, lifted under the new one: the old email's row ends too."""
    apply = conf("H03", "RES-OLD", action="apply")
    take_in(rt, apply, "restriction")
    restriction.plan_restriction(rt, "RES-OLD", "apply")
    restriction.apply_platform(rt, "RES-OLD")
    fix = conf("H03", "RECT-BETWEEN", corrections=[{"field": "accounts.email", "value": "j.smith.new@example.ie"}])
    take_in(rt, fix, "rectification")
    rectification.plan_rectification(rt, "RECT-BETWEEN", fix)
    rectification.rectify_platform(rt, "RECT-BETWEEN")
    lift = {**conf("H03", "LIFT-NEW", action="lift"), "subject": {"email": "j.smith.new@example.ie"}}
    take_in(rt, lift, "restriction")
    restriction.plan_restriction(rt, "LIFT-NEW", "lift")
    restriction.notify_lift(rt, "LIFT-NEW", lift)
    restriction.lift_platform(rt, "LIFT-NEW")
    restriction.check_restriction(rt, "LIFT-NEW", "lift")
    old_key = restrictions.SubjectKeys.of(rt.hash_secret, emails=[normalize_email(HARD["H03"].email)])
    assert restrictions.in_force(world, old_key) == []
    assert all(r.lifted_by == "LIFT-NEW" for r in restrictions.of_request(world, "RES-OLD"))


# -- rectification --------------------------------------------------------------------------


def test_a_rectified_email_is_found_by_the_next_request_and_the_old_one_by_requests_already_open(rt, world):
    new_email = "María.López@Ejemplo.ES "  # another script's letters, odd case, trailing space
    run = conf("H01", "RECT-H01", corrections=[{"field": "accounts.email", "value": new_email}])
    take_in(rt, run, "rectification")
    planned = rectification.plan_rectification(rt, "RECT-H01", run)
    assert {t["system"] for t in planned["partners"]} == HARD_RECIPIENTS(rt, "RECT-H01")
    details = rt.staging("RECT-H01").get_json("partner_details.json")["RECT-H01"]
    assert {d["corrections"]["email"] for d in details.values()} == {"maría.lópez@ejemplo.es"}
    rectification.rectify_platform(rt, "RECT-H01")
    rectification.check_rectification(rt, "RECT-H01")
    resolver = IdentityResolver(world, load_data_map(), rt.hash_secret)
    old = normalize_email(HARD["H01"].email)
    (later,) = resolver.resolve([SubjectQuery("later", email=old, received_at=datetime.now(UTC))])
    assert later.account_ids == set()
    (earlier,) = resolver.resolve([SubjectQuery("open", email=old, received_at=datetime(2026, 11, 30, tzinfo=UTC))])
    (new,) = resolver.resolve([SubjectQuery("new", email="maría.lópez@ejemplo.es")])
    assert earlier.account_ids == new.account_ids
    assert len(new.account_ids) == 1
    assert {old, "maría.lópez@ejemplo.es"} <= earlier.emails  # the open request still finds rows keyed by the old one
    # the ledger holds field names and keyed hashes, never a value
    events = rt.ledger.events("RECT-H01")
    text = json.dumps([e.payload for e in events], default=str).lower()
    assert "ejemplo" not in text
    assert "maria" not in text
    planned_event = next(e for e in events if e.event_type == "rectification.planned")
    (field,) = planned_event.payload["fields"]
    assert field["field"] == "accounts.email"
    assert field["before"] != field["after"]
    assert len(field["after"]) == 64


def test_rectification_of_names_phone_and_an_address_row_in_one_transaction(rt, world):
    h07 = account_of(world, "H07")
    with world.connect() as conn:
        addresses = conn.execute(sa.select(app_schema.addresses).where(app_schema.addresses.c.account_id == h07)).all()
    row = addresses[0]
    corrections = [
        {"field": "accounts.last_name", "value": "Ågren"},
        {"field": "accounts.phone", "value": "512\u2011345\u00a0678", "row_id": None},
        {"field": "addresses.city", "value": "Kraków", "row_id": row.id},
        {"field": "addresses.postal_code", "value": "30-001", "row_id": row.id},
        {"field": "addresses.country", "value": "pl", "row_id": row.id},
    ]
    run = {
        **conf("H07", "RECT-H07", corrections=corrections),
        "subject": {"email": HARD["H07"].email, "phone_region": "PL"},
    }
    take_in(rt, run, "rectification")
    rectification.plan_rectification(rt, "RECT-H07", run)
    details = rt.staging("RECT-H07").get_json("partner_details.json")["RECT-H07"]
    if details:  # partners hold the full name and the phone, never the address parts
        sent = next(iter(details.values()))["corrections"]
        assert sent["name"] == "Zoë Ågren"
        assert sent["phone"] == "+48512345678"
        assert "city" not in sent
    rectification.rectify_platform(rt, "RECT-H07")
    rectification.check_rectification(rt, "RECT-H07")
    with world.connect() as conn:
        account = conn.execute(sa.select(app_schema.accounts).where(app_schema.accounts.c.id == h07)).one()
        address = conn.execute(sa.select(app_schema.addresses).where(app_schema.addresses.c.id == row.id)).one()
    assert (account.last_name, account.phone) == ("Ågren", "+48512345678")
    assert (address.city, address.postal_code, address.country) == ("Kraków", "30-001", "PL")


def _digest(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return repr(
            [
                conn.execute(sa.select(t).order_by(*t.primary_key.columns)).all()
                for t in app_schema.metadata.sorted_tables
            ]
        )


@pytest.mark.parametrize(
    ("corrections", "message"),
    [
        ([{"field": "accounts.role", "value": "admin"}], "accounts.role' cannot be rectified"),
        ([{"field": "accounts.email", "value": "not an address"}], "is not an email address"),
        ([{"field": "accounts.phone", "value": "12"}], "international format"),
        ([{"field": "accounts.first_name", "value": "R2-D2"}], "letters"),
        ([{"field": "addresses.country", "value": "XX"}], "ISO 3166"),
        ([{"field": "accounts.company", "value": "Acme\u200b Ltd"}], "invisible"),
        ([{"field": "invoices.billing_name", "value": "X"}], "cannot be rectified"),
        ([], "give a list"),
    ],
)
def test_bad_corrections_are_refused_at_intake_naming_the_field_not_the_value(rt, world, corrections, message):
    before = _digest(world)
    run = conf("H01", "RECT-BAD", corrections=corrections)
    with pytest.raises(RequestValidationError, match=message) as refused:
        take_in(rt, run, "rectification")
    for item in corrections:
        if len(item["value"]) > 3:
            assert item["value"] not in str(refused.value)
    assert rt.ledger.get_request("RECT-BAD") is None
    assert _digest(world) == before


def test_corrections_that_cannot_be_carried_out_are_refused_before_anything_changes(rt, world):
    h01 = account_of(world, "H01")
    with world.begin() as conn:  # a second address, so an address correction must say which
        conn.execute(
            app_schema.addresses.insert().values(
                account_id=h01, kind="billing", recipient_name="M L", line1="Calle 1", city="Madrid",
                postal_code="28001", country="ES",
            )
        )  # fmt: skip
    other = HARD["H03"].email
    before = _digest(world)
    cases = [
        ([{"field": "addresses.city", "value": "Sevilla"}], "give the row_id"),
        ([{"field": "addresses.city", "value": "Sevilla", "row_id": 999999}], "no such row of the subject"),
        ([{"field": "accounts.email", "value": other}], "belongs to another account"),
        ([{"field": "addresses.postal_code", "value": "2800", "row_id": _address_of(world, h01)}], "postal code of ES"),
    ]
    for i, (corrections, message) in enumerate(cases):
        run = conf("H01", f"RECT-NO-{i}", corrections=corrections)
        take_in(rt, run, "rectification")
        with pytest.raises(RequestValidationError, match=message):
            rectification.plan_rectification(rt, f"RECT-NO-{i}", run)
    assert _digest(world) == before


def _address_of(engine: sa.Engine, account_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.min(app_schema.addresses.c.id)).where(app_schema.addresses.c.account_id == account_id)
        ).scalar_one()


def test_a_row_changed_since_the_plan_is_not_overwritten(rt, world):
    run = conf("H03", "RECT-RACE", corrections=[{"field": "accounts.company", "value": "Acme Tooling Group"}])
    take_in(rt, run, "rectification")
    rectification.plan_rectification(rt, "RECT-RACE", run)
    h03 = account_of(world, "H03")
    with world.begin() as conn:  # support edits the row meanwhile
        conn.execute(
            app_schema.accounts.update().where(app_schema.accounts.c.id == h03).values(company="Acme Holdings")
        )
    with pytest.raises(TerminalError, match="changed since the plan"):
        rectification.rectify_platform(rt, "RECT-RACE")
    with world.connect() as conn:
        assert (
            conn.execute(sa.select(app_schema.accounts.c.company).where(app_schema.accounts.c.id == h03)).scalar_one()
            == "Acme Holdings"
        )


# -- objection and consent withdrawal -------------------------------------------------------


def test_an_objection_to_direct_marketing_stops_the_next_send_at_once(rt, world, mail):
    h03, h01 = account_of(world, "H03"), account_of(world, "H01")
    opt_in(world, [h03, h01], rt.hash_secret)
    run = conf("H03", "OBJ-DM", purposes=["marketing"])
    take_in(rt, run, "objection")
    planned = objection.plan_objection(rt, "OBJ-DM", run)
    assert planned["weigh"] is False
    done = objection.apply_immediate(rt, "OBJ-DM")
    assert done["suppression_entries"] == 1
    objection.check_objection(rt, "OBJ-DM")
    assert objection.plan_recipients(rt, "OBJ-DM")["partners"] == []  # no recipient markets for Fabconnect
    with world.connect() as conn:
        prefs = conn.execute(
            sa.select(app_schema.marketing_preferences).where(app_schema.marketing_preferences.c.account_id == h03)
        ).one()
    assert (prefs.newsletter, prefs.product_updates) == (False, False)
    send_newsletter(world, rt.hash_secret, "nl-after")
    assert h03 not in sent_to(world, "nl-after")
    assert h01 in sent_to(world, "nl-after")
    assert restrictions.restricted_accounts(world, "pricing") == set()  # only marketing stopped
    objection.close_objection(rt, "OBJ-DM", run)
    assert rt.ledger.get_request("OBJ-DM").outcome == "processing_stopped"


def test_a_consent_withdrawal_unpublishes_the_testimonial(rt, world):
    t = app_schema.testimonials
    with world.connect() as conn:
        published = conn.execute(sa.select(t.c.account_id).where(t.c.published.is_(True))).scalars().first()
    if published is None:
        pytest.skip("this world has no published testimonial")
    email = _email_of(world, published)
    run = {"request_id": "WITHDRAW-1", "subject": {"email": email}, "received_at": RECEIVED, "verification": VERIFIED,
           "purposes": ["testimonials"]}  # fmt: skip
    take_in(rt, run, "objection")
    objection.plan_objection(rt, "WITHDRAW-1", run)
    objection.apply_immediate(rt, "WITHDRAW-1")
    objection.check_objection(rt, "WITHDRAW-1")
    with world.connect() as conn:
        assert not any(conn.execute(sa.select(t.c.published).where(t.c.account_id == published)).scalars())
    assert restrictions.in_force(world, restriction.subject_keys(rt, rt.staging("WITHDRAW-1").get_subjects()[0]))[
        0
    ].basis == (restrictions.CONSENT_WITHDRAWN)


def _email_of(engine: sa.Engine, account_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(app_schema.accounts.c.email).where(app_schema.accounts.c.id == account_id)
        ).scalar_one()


@pytest.mark.parametrize("decision", [objection.UPHOLD, objection.OVERRIDE])
def test_an_objection_on_legitimate_interests_waits_for_ops_then_applies_or_refuses(rt, world, mail, decision):
    h01 = account_of(world, "H01")
    run = conf("H01", "OBJ-LI", purposes=["pricing"], grounds="I do not want my quotes profiled")
    take_in(rt, run, "objection")
    assert objection.plan_objection(rt, "OBJ-LI", run)["weigh"] is True
    objection.apply_immediate(rt, "OBJ-LI")
    assert restrictions.restricted_accounts(world, "pricing") == set()  # nothing before ops decide
    assert "profiled" not in objection.weigh_body(rt, "OBJ-LI")  # the subject's words stay in the conf
    with pytest.raises(TerminalError, match="needs the compelling grounds"):
        objection.apply_decision(
            rt, "OBJ-LI", {"chosen_options": [objection.OVERRIDE], "params_input": {"reason": " "}}
        )
    reason = "Pricing features are needed to detect below-cost quotes (fraud)"
    objection.apply_decision(rt, "OBJ-LI", {"chosen_options": [decision], "params_input": {"reason": reason}})
    objection.check_objection(rt, "OBJ-LI")
    before = pricing_rows(world)
    refresh_pricing_features(world, now=datetime(2026, 12, 2, 3, 0) + timedelta(hours=1))
    after = pricing_rows(world)
    objection.close_objection(rt, "OBJ-LI", run)
    row = rt.ledger.get_request("OBJ-LI")
    body = mails_about("OBJ-LI", mail)[-1].get_body(("html",)).get_content()
    if decision == objection.UPHOLD:
        assert restrictions.restricted_accounts(world, "pricing") == {h01}
        assert after.get(h01) == before.get(h01)
        assert row.outcome == "processing_stopped"
    else:
        assert restrictions.restricted_accounts(world, "pricing") == set()
        assert row.status == "refused"
        assert row.outcome == "refused"
        assert reason in body
        assert "supervisory authority" in body


def test_recipients_that_market_for_fabconnect_are_told_which_purposes_stopped(rt, world):
    """A data map in which the payment processor also runs our newsletters: it alone is told, with
    the purposes that stopped (and not of a purpose ops decided to carry on with)."""
    import yaml

    from include import settings
    from include.dsr.core.data_map import parse_data_map

    raw = yaml.safe_load(settings.DATA_MAP_PATH.read_text())
    payflow = next(s for s in raw["systems"] if s["key"] == "payflow")
    payflow["collections"][0]["purposes"] = ["payments", "marketing", "pricing"]
    rt.data_map = parse_data_map(raw)
    run = conf("H01", "OBJ-MAILER", purposes=["marketing", "pricing"])
    take_in(rt, run, "objection")
    objection.plan_objection(rt, "OBJ-MAILER", run)
    objection.apply_immediate(rt, "OBJ-MAILER")
    reason = "Quotes below cost are flagged from pricing features"
    objection.apply_decision(
        rt, "OBJ-MAILER", {"chosen_options": [objection.OVERRIDE], "params_input": {"reason": reason}}
    )
    targets = objection.plan_recipients(rt, "OBJ-MAILER")
    assert targets["partners"] == [{"system": "payflow", "channel": "api"}]
    details = rt.staging("OBJ-MAILER").get_json("partner_details.json")["OBJ-MAILER"]
    assert details == {"payflow": {"purposes": ["marketing"]}}
    assert [r.status for r in rt.ledger.system_results("OBJ-MAILER") if r.system == "payflow"] == ["pending"]
