"""The erasure DAG end to end with dag.test() against the demo world (platform DB, versioned object
store, partner simulators over HTTP and S3, SMTP).

* a dry run touches nothing, and plans exactly what the real run then does;
* one wave: every generator hard case but their near twins, a subject added outside the
  generator in odd forms of every identity, a couple of hundred ordinary people, and lines that
  must be refused on their own (malformed, duplicate, unverified, another subject's request id).
  After it, each erased subject is gone wherever it may be gone (platform, every object version,
  partners), held invoice rows remain stripped and registered, and everyone else's rows, partner
  rows and object versions are byte-for-byte unchanged;
* partner failure modes (500, stall, silence, lie, claims erased but kept): the request closes
  only when every recipient is checked;
* the object store going down mid-erasure, then a re-run: completes, nothing erased twice,
  nothing left behind, the ledger chain verifies.

The module changes the shared world, so it rebuilds it at the end.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from include import constants, settings
from include.demo import app_schema
from include.demo.partners.faults import Faults
from include.demo.smtp_sink import read_mail
from include.dsr.core.identities import normalize_email
from include.dsr.core.pii import keyed_hash
from tests.e2e import world_state
from tests.e2e.conftest import rebuild_world, run_dag
from tests.e2e.helpers import HARD, VERIFIED, conf_for, ledger, upload_wave, wave_report
from tests.support import TcpProxy

pytestmark = pytest.mark.slow

DAG = constants.DAG_ERASURE
PLATFORM = "fabconnect_app"
#: Hard cases erased in the wave; their near twins (H02 next to H01, H04 next to H03, H06 on H05's
#: shared line) are not, and must come through untouched.
WAVE_HARD = ("H01", "H03", "H05", "H07", "H08", "H09", "H10")
CRAFTED_EMAIL = "zoë.ångström@exämple.de"


@pytest.fixture(scope="module", autouse=True)
def world_restored_afterwards(demo_world):
    yield
    rebuild_world(demo_world)


def _people(paths, kind: str = "customer") -> list[str]:
    truth = sqlite3.connect(paths.ground_truth)
    keys = [k for (k,) in truth.execute("SELECT person_key FROM people WHERE kind = ? ORDER BY person_key", (kind,))]
    truth.close()
    return [k for k in keys if k.startswith("P")]


def _systems_of(paths, person: str) -> set[str]:
    truth = sqlite3.connect(paths.ground_truth)
    found = {s for (s,) in truth.execute("SELECT DISTINCT system FROM owned_rows WHERE person_key = ?", (person,))}
    truth.close()
    return found


def _person(paths, key: str) -> dict:
    truth = sqlite3.connect(paths.ground_truth)
    truth.row_factory = sqlite3.Row
    row = dict(truth.execute("SELECT * FROM people WHERE person_key = ?", (key,)).fetchone())
    truth.close()
    return row


def _line(paths, key: str, request_id: str) -> dict:
    if key in HARD:
        return conf_for(key, request_id)
    return {"request_id": request_id, "subject": {"email": _person(paths, key)["email"]}, "verification": VERIFIED}


def _events(request_id: str) -> dict[str, dict]:
    return {e.event_type: e.payload for e in ledger().events(request_id)}


def _snapshot(world, people: set[str], suppressed: set[str] = frozenset(), crafted_rows: dict | None = None) -> dict:
    """Digests of everything but the rows of ``people`` (ground truth) and ``crafted_rows``."""
    skip = world_state.owned(world.paths, people)
    for place, ids in (crafted_rows or {}).items():
        skip[place] = skip.get(place, set()) | ids
    objects = skip.get(("fabconnect_s3", "specifications"), set()) | skip.get(("fabconnect_s3", "id_documents"), set())
    objects |= {k for (system, _), keys in skip.items() if system == "fabconnect_s3" for k in keys}
    return {
        "platform": world_state.platform_digests(world.paths.app_url, skip, suppressed),
        "partners": world_state.partner_digests(world.paths, skip),
        "objects": world_state.object_versions(world.s3, objects),
    }


def test_a_dry_run_touches_nothing_and_plans_what_the_run_then_does(airflow_db, demo_world, healthy_partners):
    request_id = "E2E-ERASE-DRY-H02"
    everything = _snapshot(demo_world, set())
    dry = run_dag(DAG, {**conf_for("H02", request_id), "dry_run": True})
    assert dry.state == "success"
    assert _snapshot(demo_world, set()) == everything  # not one row, partner row or object version changed
    assert ledger().get_request(request_id) is None
    report = json.loads(
        demo_world.s3.get_object(Bucket=constants.EXPORTS_BUCKET, Key=f"_dry_runs/{request_id}/report.json")[
            "Body"
        ].read()
    )
    assert report["would"] == "erase as planned"
    plan = report["plan"]
    assert plan["rows_deleted"] > 0
    assert plan["recipients"]

    run = run_dag(DAG, conf_for("H02", request_id))
    assert run.state == "success", [(t.task_id, t.state) for t in run.get_task_instances()]
    planned = _events(request_id)["erasure.planned"]
    assert planned == plan  # the same rows, fields, holds, objects and recipients
    request = ledger().get_request(request_id)
    assert request.outcome in ("erased", "erased_with_holds")
    again = run_dag(DAG, conf_for("H02", request_id))  # a finished request: nothing to do, says so
    assert again.state == "success"
    assert {t.task_id for t in again.get_task_instances() if t.state == "success"} == {
        "validate_request",
        "check_identity",
    }


CRAFTED_ID = 910001
CRAFTED_PHONE = "+49 (0)151 999 1234"


@pytest.fixture(scope="module")
def crafted(demo_world):
    """A customer the generator never makes: capital decomposed letters and a tab around the stored
    address, a national-format phone in a chat, a specification uploaded twice (two versions), and
    a near-duplicate address that belongs to nobody (its ticket must survive)."""
    engine = sa.create_engine(demo_world.paths.app_url)
    now = datetime(2026, 11, 1, 9, 0)
    spec_key = f"specs/{CRAFTED_ID}/part-{CRAFTED_ID}.step"
    for body in (b"ISO-10303-21; draft", b"ISO-10303-21; final"):
        demo_world.s3.put_object(Bucket=constants.PLATFORM_BUCKET, Key=spec_key, Body=body)
    stored = unicodedata.normalize("NFD", CRAFTED_EMAIL.upper()) + "\t"
    with engine.begin() as conn:
        conn.execute(
            app_schema.accounts.insert().values(
                id=CRAFTED_ID,
                role="customer",
                first_name="Zoë",
                last_name="Ångström",
                email=stored,
                phone=CRAFTED_PHONE,
                country="DE",
                created_at=now,
            )
        )
        ticket = {"account_id": None, "subject": "s", "body": "b", "created_at": now, "status": "open"}
        conn.execute(
            app_schema.support_tickets.insert(),
            [
                {**ticket, "id": CRAFTED_ID, "contact_email": "\u00a0" + CRAFTED_EMAIL.title() + "\u200b"},
                {**ticket, "id": CRAFTED_ID + 1, "contact_email": "zoe.angstrom@example.de"},  # a near-duplicate
            ],
        )
        conn.execute(
            app_schema.chatbot_transcripts.insert().values(
                id=CRAFTED_ID, visitor_email=None, visitor_phone="0151 999\u20111234", started_at=now, transcript="t"
            )
        )
        conn.execute(
            app_schema.quotes.insert().values(
                id=CRAFTED_ID,
                account_id=CRAFTED_ID,
                created_at=now,
                process="cnc_milling",
                material="PA12",
                quantity=1,
                price_eur=10,
                spec_object_key=spec_key,
            )
        )
    engine.dispose()
    return {
        "rows": {
            (PLATFORM, "accounts"): {str(CRAFTED_ID)},
            (PLATFORM, "support_tickets"): {str(CRAFTED_ID)},
            (PLATFORM, "chatbot_transcripts"): {str(CRAFTED_ID)},
            (PLATFORM, "quotes"): {str(CRAFTED_ID)},
            ("fabconnect_s3", "specifications"): {spec_key},
        },
        "objects": {spec_key},
        "survivor": (PLATFORM, "support_tickets", str(CRAFTED_ID + 1)),
    }


@pytest.fixture(scope="module")
def cast(demo_world) -> dict[str, list[str]]:
    """Who is erased where: customers served by the API payment partner and no manual partner are
    kept for the single-request tests; up to 190 other ordinary people join the wave."""
    from tests.e2e.helpers import manual_partners

    paths = demo_world.paths
    singles = [
        k
        for k in _people(paths)
        if "payflow" in (systems := _systems_of(paths, k)) and not systems & set(manual_partners())
    ][:8]
    everyone = [k for kind in ("customer", "partner_user", "visitor") for k in _people(paths, kind)]
    return {"singles": singles, "wave": [k for k in sorted(everyone) if k not in singles][:190]}


def _emails_of(paths, keys) -> dict[str, str]:
    return {k: (HARD[k].email if k in HARD else _person(paths, k)["email"]) for k in keys}


def test_a_wave_erases_every_subject_wherever_it_may_go_and_nothing_of_anyone_else(
    airflow_db, demo_world, healthy_partners, crafted, cast
):
    from include.dsr.orchestration.erasure_dag import MANUAL_ERASED
    from tests.e2e.hitl import HitlResponder

    paths, s3 = demo_world.paths, demo_world.s3
    wave_id = "E2E-WAVE-1"
    members = [*WAVE_HARD, *cast["wave"]]
    lines: list = [_line(paths, k, f"E2E-W-{k}") for k in members]
    lines.append(
        {
            "request_id": "E2E-W-CRAFTED",
            "subject": {"email": unicodedata.normalize("NFD", CRAFTED_EMAIL.upper()) + " "},
            "verification": VERIFIED,
        }
    )
    bad = [
        "{this is not json",
        {"request_id": "E2E-W-MALFORMED", "subject": {"email": "not-an-address"}, "verification": VERIFIED},
        {"request_id": "E2E-W-UNVERIFIED", "subject": {"email": HARD["H04"].email}},
        _line(paths, "H04", "E2E-W-TAKEN"),  # the id of another subject's request
        _line(paths, "H06", f"E2E-W-{members[3]}"),  # an id used by an earlier line
        _line(paths, members[4], "E2E-W-AGAIN"),  # a subject already in the wave
    ]
    earlier = ledger()
    earlier.create_schema()  # a fresh world's ledger exists once a run has started
    if earlier.get_request("E2E-W-TAKEN") is None:  # an earlier request of someone else
        received = datetime.now(UTC)
        earlier.record_request("E2E-W-TAKEN", "access", "GDPR", "f" * 64, received, received + timedelta(days=30))
    key = upload_wave(s3, wave_id, [*lines[:5], *bad, *lines[5:]])
    erased = {*members, "H02"}  # H02 went in the dry-run test
    emails = _emails_of(paths, members)
    suppressed = {keyed_hash(normalize_email(e), settings.DEMO_ERASURE_HASH_SECRET) for e in emails.values()}
    suppressed.add(keyed_hash(normalize_email(CRAFTED_EMAIL), settings.DEMO_ERASURE_HASH_SECRET))
    skip = set(erased)
    before = _snapshot(demo_world, skip, suppressed, crafted["rows"])
    theirs = world_state.owned(paths, set(members))
    objects = {k for (system, _), keys in theirs.items() if system == "fabconnect_s3" for k in keys}
    objects |= crafted["objects"]
    assert world_state.versions_of(s3, objects) > len(objects)  # some were uploaded twice

    started = time.monotonic()
    with HitlResponder(DAG, {"confirm_manual_partner": ([MANUAL_ERASED], {"record_count": 1})}):
        run = run_dag(DAG, {"request_id": wave_id, "wave": key}, approve="confirm_identity")
    elapsed = time.monotonic() - started
    assert run.state == "success", [(t.task_id, t.map_index, t.state) for t in run.get_task_instances()]
    print(f"\nwave of {len(lines)} erasures: {elapsed:.1f} s under dag.test()")

    report = wave_report(s3, wave_id)
    assert report["counts"] == {"accepted": len(lines), "refused": 4, "duplicate": 2}
    refused = {d["line"]: d["reason"] for d in report["detail"] if d["status"] != "accepted"}
    assert "not a JSON object" in refused[6]
    assert "malformed email" in refused[7]
    assert "no verification" in refused[8]
    assert "another subject" in refused[9] or "recorded for" in refused[9]
    assert "already used by an earlier line" in refused[10]
    assert "same subject as request" in refused[11]
    assert "@" not in json.dumps(report)  # reasons name ids, never identities

    # Each request: its own ledger row, closed, with its own evidence and notice.
    outcomes = {}
    for line in lines:
        row = ledger().get_request(line["request_id"])
        assert row.status == "completed", (line["request_id"], row.status, row.outcome_summary)
        outcomes[line["request_id"]] = row.outcome
        systems = {r.system: r.status for r in ledger().system_results(line["request_id"])}
        assert systems[PLATFORM] == "completed"
        assert set(systems.values()) == {"completed"}, systems
    assert outcomes["E2E-W-H01"] == "erased_with_holds"  # invoices kept for 8 years
    assert outcomes["E2E-W-CRAFTED"] == "erased"
    assert set(outcomes.values()) <= {"erased", "erased_with_holds", "no_personal_data_found"}
    ledger().verify_chain_or_raise()

    # Gone wherever it may be gone; held rows kept, stripped and registered.
    for person in [*WAVE_HARD, *cast["wave"][:12]]:
        left = world_state.text_cells_holding(paths.app_url, normalize_email(emails[person]))
        assert left == [], (person, left)
    assert world_state.text_cells_holding(paths.app_url, normalize_email(CRAFTED_EMAIL)) == []
    assert world_state.text_cells_holding(paths.app_url, "zoe.angstrom@example.de")  # the near-duplicate stays
    assert world_state.text_cells_holding(paths.app_url, "999 1234") == []  # the crafted phone, in every form
    assert world_state.versions_of(s3, objects) == 0  # every version of every object
    held = _registry().held("E2E-W-H01")
    assert {h.collection for h in held} >= {"invoices", "orders"}
    invoice = next(h for h in held if h.collection == "invoices")
    assert invoice.basis.startswith("Invoices")
    issued = _invoice_issued_at(paths.app_url, invoice.row_key)  # the row is still there
    issued_day = issued.date() if isinstance(issued, datetime) else issued
    assert invoice.retain_until.date() == issued_day.replace(year=issued_day.year + 8)
    for (system, collection), keys in theirs.items():
        if system in (PLATFORM, "fabconnect_s3"):
            continue
        still = _partner_rows(paths, system, collection, keys)
        assert not still or _partner_holds(system, collection), (system, collection, still)

    # Everyone else: every row, partner row and object version exactly as before.
    after = _snapshot(demo_world, skip, suppressed, crafted["rows"])
    for part in ("platform", "partners"):
        changed = {k for k in before[part] if before[part][k] != after[part].get(k)}
        assert not changed, (part, changed)
    assert after["objects"] == before["objects"]

    # One notice per request; the wave's file (identities) is gone, its conf held none.
    notices = [m for m in read_mail() if "E2E-W-" in m["Subject"]]
    assert len({m["Subject"] for m in notices}) >= len(lines) - 1  # H09 visitor has an email too
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=constants.EXPORTS_BUCKET, Key=key)
    assert "@" not in json.dumps(run.conf)


def _registry():
    from include.dsr.ledger.registry import Registry

    return Registry(ledger().engine)


def _invoice_issued_at(app_url: str, key: str) -> datetime:
    engine = sa.create_engine(app_url)
    with engine.connect() as conn:
        issued = conn.execute(
            sa.select(app_schema.invoices.c.issued_at).where(app_schema.invoices.c.id == int(key))
        ).scalar_one()
    engine.dispose()
    return issued


def _partner_rows(paths, system: str, table: str, keys: set[str]) -> list[str]:
    conn = sqlite3.connect(paths.partner_db(system))
    marks = ",".join("?" * len(keys))
    rows = [str(r[0]) for r in conn.execute(f'SELECT id FROM "{table}" WHERE id IN ({marks})', sorted(keys))]
    conn.close()
    return rows


def _partner_holds(system: str, collection: str) -> bool:
    from include.dsr.core.data_map import load_data_map

    coll = load_data_map().system(system).collection(collection)
    return bool(coll.retention and coll.retention.legal_hold)


API_PARTNER = "payflow"


def _single(paths, person: str, request_id: str) -> dict:
    return _line(paths, person, request_id)


def _row(request_id: str, system: str):
    return next(r for r in ledger().system_results(request_id) if r.system == system and r.action == "erase")


@pytest.mark.parametrize(
    ("index", "faults", "closes", "reason"),
    [
        pytest.param(0, Faults(mode="fail", fail_count=2), True, None, id="500 twice, then answers"),
        pytest.param(1, Faults(mode="stall", stall_seconds=3), False, "did not answer", id="stalls"),
        pytest.param(2, Faults(mode="never"), False, "did not confirm the erasure", id="never answers"),
        pytest.param(3, Faults(mode="lie"), False, "rows of another subject", id="lies"),
        pytest.param(4, Faults(mode="keep"), False, "claims it erased but still holds", id="claims erased, keeps"),
    ],
)
def test_a_request_closes_only_once_every_partner_is_checked(
    airflow_db, demo_world, healthy_partners, cast, monkeypatch, index, faults, closes, reason
):
    monkeypatch.setattr(settings, "PARTNER_MAX_WAIT_SECONDS", 4.0)  # "never" fails in seconds, not a month
    person = cast["singles"][index]
    request_id = f"E2E-ERASE-{faults.mode.upper()}"
    healthy_partners[API_PARTNER].faults = faults
    run = run_dag(DAG, _single(demo_world.paths, person, request_id))
    request = ledger().get_request(request_id)
    partner = _row(request_id, API_PARTNER)
    assert _row(request_id, PLATFORM).status == "completed"  # the platform erasure did not wait for partners
    assert "checks.passed" in _events(request_id)
    if closes:
        assert run.state == "success"
        assert request.status == "completed"
        assert partner.status == "completed"
        assert partner.outcome.startswith("erased, checked by reading back")
        return
    assert run.state == "failed"
    assert request.closed_at is None  # visibly open, never closed
    assert request.status in ("waiting_on_partner", "failed")
    assert partner.status in ("failed", "waiting")
    assert reason in partner.outcome
    assert API_PARTNER in (request.outcome_summary or "") or reason in (request.outcome_summary or "")


def test_the_object_store_down_mid_erasure_then_a_rerun_completes_without_erasing_twice(
    airflow_db, demo_world, healthy_partners, cast
):
    from include.demo.world import s3_client_for
    from include.dsr.rights.runtime import Runtime

    person, request_id = cast["singles"][5], "E2E-ERASE-S3-DOWN"
    email = normalize_email(_person(demo_world.paths, person)["email"])
    objects = {
        k
        for (system, _), keys in world_state.owned(demo_world.paths, {person}).items()
        if system == "fabconnect_s3"
        for k in keys
    }
    rt = Runtime.from_airflow()
    direct = rt.s3
    proxy = TcpProxy(settings.S3_PORT)
    rt.s3 = s3_client_for(proxy.url)
    stop = threading.Event()

    def cut_after_the_platform() -> None:  # the object store goes away the moment the DB is erased
        while not stop.wait(0.05):
            rows = [r for r in ledger().system_results(request_id) if r.system == PLATFORM]
            if rows and rows[0].status == "completed":
                proxy.cut()
                return

    watcher = threading.Thread(target=cut_after_the_platform, daemon=True)
    ledger().get_request("warm-up")  # the ledger's connection is made here, not in the thread
    watcher.start()
    try:
        first = run_dag(DAG, _single(demo_world.paths, person, request_id))
    finally:
        stop.set()
        rt.s3 = direct
        proxy.stop()
    assert first.state == "failed"
    failed = {t.task_id for t in first.get_task_instances() if t.state in ("failed", "upstream_failed")}
    assert "erase_objects" in failed or "check_erasure" in failed
    assert ledger().get_request(request_id).closed_at is None
    platform_before = _row(request_id, PLATFORM)

    again = run_dag(DAG, _single(demo_world.paths, person, request_id))
    assert again.state == "success", [(t.task_id, t.state) for t in again.get_task_instances()]
    request = ledger().get_request(request_id)
    assert request.status == "completed"
    platform = _row(request_id, PLATFORM)
    assert (platform.record_count, platform.attempts) == (platform_before.record_count, platform_before.attempts)
    events = [e.event_type for e in ledger().events(request_id)]
    assert events.count("erasure.planned") == 1
    assert events.count("request.closed") == 1
    assert world_state.versions_of(demo_world.s3, objects) == 0
    assert world_state.text_cells_holding(demo_world.paths.app_url, email) == []
    digest = keyed_hash(email, settings.DEMO_ERASURE_HASH_SECRET)
    engine = sa.create_engine(demo_world.paths.app_url)
    with engine.connect() as conn:
        entries = conn.execute(
            sa.select(sa.func.count()).where(app_schema.suppression_list.c.email_hash == digest)
        ).scalar_one()
    engine.dispose()
    assert entries == 1
    ledger().verify_chain_or_raise()
