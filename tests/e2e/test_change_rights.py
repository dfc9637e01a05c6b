"""Restriction, rectification and objection end to end with dag.test() against the demo world:
the platform DB, the partner simulators over HTTP and S3 drop boxes, SMTP, and the demo's own
marketing and pricing DAGs.

* a restriction reaches every recipient (their rows marked), the newsletter DAG skips the subject,
  the lift tells the subject first, then every mark is cleared;
* a rectified email reaches every recipient that held it (checked by reading back), and the next
  access request under the new email finds the subject;
* partners that fail, never answer, or claim a correction they did not make: the request closes
  only when every recipient's claim holds;
* an objection to direct marketing stops at once, one on pricing waits for ops in the
  human-in-the-loop task, then the pricing DAG skips the subject.

The module changes the shared world, so it rebuilds it at the end.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from include import constants, settings
from include.demo import app_schema
from include.demo.partners.faults import Faults
from include.demo.partners.store import PartnerStore
from include.dsr.core.data_map import load_data_map
from include.dsr.core.identities import normalize_email
from include.dsr.processing import restrictions
from include.dsr.rights.objection import UPHOLD
from tests.e2e.conftest import rebuild_world, run_dag
from tests.e2e.helpers import VERIFIED, customers_of_automated_partners, gathered_rows, ledger, package_data
from tests.e2e.hitl import HitlResponder

pytestmark = pytest.mark.slow

PLATFORM = "fabconnect_app"


@pytest.fixture(scope="module", autouse=True)
def world_restored_afterwards(demo_world):
    yield
    rebuild_world(demo_world)


def _automated_partners() -> dict[str, str]:
    return {s.key: s.channel for s in load_data_map().partners() if s.channel != "manual"}


@pytest.fixture(scope="module")
def cast(demo_world) -> list[tuple[str, str, set[str]]]:
    """Ordinary customers whose data went to automated partners only: (key, email, partners)."""
    found = customers_of_automated_partners(demo_world.paths, min_partners=2)
    assert len(found) >= 8, "the demo world has too few customers with two automated partners"
    return found


def _conf(email: str, request_id: str, **extra) -> dict:
    return {"request_id": request_id, "subject": {"email": email}, "verification": VERIFIED, **extra}


def _store(world, system: str) -> PartnerStore:
    return PartnerStore(world.paths.partner_db(system))


def _marked(world, system: str, email: str) -> int:
    """How many of the subject's rows at the partner carry a restriction mark."""
    store = _store(world, system)
    mine = {(table, row["id"]) for table, rows in store.find({"email": email}).items() for row in rows}
    marks = {(table, row_id) for table, ids in store.restrictions().items() for row_id in ids}
    return len(mine & marks)


def _account(world, email: str) -> int:
    engine = sa.create_engine(world.paths.app_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(app_schema.accounts.c.id, app_schema.accounts.c.email)).all()
    engine.dispose()
    return next(i for i, e in rows if normalize_email(e) == normalize_email(email))


def _engine(world) -> sa.Engine:
    return sa.create_engine(world.paths.app_url)


def _row(request_id: str, system: str, action: str):
    return next(r for r in ledger().system_results(request_id) if r.system == system and r.action == action)


def test_a_restriction_reaches_every_recipient_and_the_lift_tells_the_subject_first(
    airflow_db, demo_world, healthy_partners, cast
):
    key, email, partners = cast[0]
    account = _account(demo_world, email)
    engine = _engine(demo_world)
    with engine.begin() as conn:  # the subject wants the newsletter: only the restriction stops it
        conn.execute(
            app_schema.marketing_preferences.update()
            .where(app_schema.marketing_preferences.c.account_id == account)
            .values(newsletter=True)
        )
    applied = run_dag(constants.DAG_RESTRICTION, _conf(email, "E2E-RESTRICT", action="apply"))
    assert applied.state == "success"
    assert ledger().get_request("E2E-RESTRICT").outcome == "restricted"
    for system in partners:
        assert _marked(demo_world, system, normalize_email(email)) > 0, system
        assert _row("E2E-RESTRICT", system, "restrict").status == "completed"
    assert restrictions.restricted_accounts(engine, "marketing") >= {account}

    newsletter = run_dag("fabconnect_marketing_send", {})
    assert newsletter.state == "success"
    with engine.connect() as conn:
        sent = set(conn.execute(sa.select(app_schema.marketing_sends.c.account_id)).scalars())
    assert sent
    assert account not in sent

    lifted = run_dag(constants.DAG_RESTRICTION, _conf(email, "E2E-LIFT", action="lift"))
    assert lifted.state == "success"
    events = ledger().events("E2E-LIFT")
    notice = next(e for e in events if e.event_type == "notice.sent" and e.payload["kind"] == "restriction_lift")
    lift_row = _row("E2E-LIFT", PLATFORM, "lift")
    assert notice.created_at <= lift_row.updated_at  # told before the marks were cleared
    for system in partners:
        assert _marked(demo_world, system, normalize_email(email)) == 0, system
    assert account not in restrictions.restricted_accounts(engine, "marketing")
    engine.dispose()


def test_a_lift_of_nobody_restricted_is_refused_and_touches_nothing(airflow_db, demo_world, healthy_partners, cast):
    _, email, _ = cast[1]
    run = run_dag(constants.DAG_RESTRICTION, _conf(email, "E2E-LIFT-NONE", action="lift"))
    assert run.state == "failed"
    row = ledger().get_request("E2E-LIFT-NONE")
    assert row.status == "failed"
    assert "no restriction is in force" in row.outcome_summary
    assert not [r for r in ledger().events("E2E-LIFT-NONE") if r.payload.get("kind") == "restriction_lift"]


def test_a_rectified_email_reaches_every_recipient_and_the_next_access_finds_it(
    airflow_db, demo_world, healthy_partners, cast
):
    key, email, partners = cast[2]
    new = f"Neu.{key}@Beispiel-Ä.de"
    corrections = [{"field": "accounts.email", "value": new}]
    run = run_dag(constants.DAG_RECTIFICATION, _conf(email, "E2E-RECTIFY", corrections=corrections))
    assert run.state == "success"
    assert ledger().get_request("E2E-RECTIFY").outcome == "rectified"
    for system in partners:
        store = _store(demo_world, system)
        assert any(store.find({"email": normalize_email(new)}).values()), system
        assert not any(store.find({"email": normalize_email(email)}).values()), system
        assert _row("E2E-RECTIFY", system, "rectify").outcome == "corrected, checked by reading back"
    access = run_dag(constants.DAG_ACCESS, _conf(new, "E2E-ACCESS-AFTER-RECTIFY"))
    assert access.state == "success"
    rows, _ = gathered_rows(package_data(demo_world.s3, "E2E-ACCESS-AFTER-RECTIFY"))
    assert (PLATFORM, "accounts", str(_account(demo_world, new))) in rows


@pytest.mark.parametrize(
    ("index", "faults", "closes", "reason"),
    [
        pytest.param(3, Faults(mode="fail", fail_count=2), True, None, id="500 twice, then answers"),
        pytest.param(4, Faults(mode="never"), False, "did not confirm the rectification", id="never answers"),
        pytest.param(5, Faults(mode="keep"), False, "claims it corrected", id="claims, keeps"),
    ],
)
def test_a_rectification_closes_only_once_every_partner_claim_holds(
    airflow_db, demo_world, healthy_partners, cast, monkeypatch, index, faults, closes, reason
):
    monkeypatch.setattr(settings, "PARTNER_MAX_WAIT_SECONDS", 4.0)  # "never" fails in seconds, not a month
    key, email, _ = cast[index]
    request_id = f"E2E-RECTIFY-{faults.mode.upper()}"
    healthy_partners["payflow"].faults = faults
    run = run_dag(
        constants.DAG_RECTIFICATION,
        _conf(email, request_id, corrections=[{"field": "accounts.email", "value": f"fixed.{key}@example.org"}]),
    )
    request, partner = ledger().get_request(request_id), _row(request_id, "payflow", "rectify")
    assert _row(request_id, PLATFORM, "rectify").status == "completed"  # the platform did not wait
    if closes:
        assert run.state == "success"
        assert request.status == "completed"
        assert partner.status == "completed"
        return
    assert run.state == "failed"
    assert request.closed_at is None  # visibly open, never closed
    assert partner.status in ("failed", "waiting")
    assert reason in partner.outcome


def test_a_marketing_objection_stops_at_once_and_one_on_pricing_waits_for_ops(
    airflow_db, demo_world, healthy_partners, cast
):
    key, email, _ = cast[6]
    account = _account(demo_world, email)
    engine = _engine(demo_world)
    features = app_schema.pricing_features
    with engine.connect() as conn:
        before = conn.execute(sa.select(features).where(features.c.account_id == account)).all()
    conf = _conf(email, "E2E-OBJECT", purposes=["marketing", "pricing"], grounds="I never agreed to profiling")
    with HitlResponder(constants.DAG_OBJECTION, {"weigh_objection": ([UPHOLD], {"reason": ""})}) as ops:
        run = run_dag(constants.DAG_OBJECTION, conf)
    assert run.state == "success"
    assert [a[0] for a in ops.answered] == ["weigh_objection"]
    assert ledger().get_request("E2E-OBJECT").outcome == "processing_stopped"
    assert account in restrictions.restricted_accounts(engine, "marketing")
    assert account in restrictions.restricted_accounts(engine, "pricing")
    assert account not in restrictions.restricted_accounts(engine, "service_improvement")
    with engine.connect() as conn:
        prefs = conn.execute(
            sa.select(app_schema.marketing_preferences).where(app_schema.marketing_preferences.c.account_id == account)
        ).all()
    assert all(not p.newsletter and not p.product_updates for p in prefs)
    assert run_dag("fabconnect_pricing_refresh", {}).state == "success"
    with engine.connect() as conn:
        after = conn.execute(sa.select(features).where(features.c.account_id == account)).all()
        others = conn.execute(sa.select(sa.func.max(features.c.computed_at))).scalar_one()
    assert after == before  # stored, not processed
    assert others is not None
    engine.dispose()
