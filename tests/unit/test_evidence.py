"""The evidence bundle: every GDPR.md "Evidence" item from a ledger with known requests, and no personal data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest
import sqlalchemy as sa

from include.dsr.evidence.bundle import build_evidence, write_bundle
from include.dsr.evidence.report import render_markdown
from include.dsr.ledger.api import Ledger, UnknownRequestError
from include.dsr.ledger.chain import event_hash
from include.dsr.ledger.schema import dsr_events
from tests.unit.cli_samples import NOW, PACKAGE_LINK, SUBJECT_EMAILS, build_sample_ledger


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    ledger = build_sample_ledger(ledger_url)
    yield ledger
    ledger.close()


def test_request_facts_and_deadlines(ledger: Ledger) -> None:
    bundle = build_evidence(ledger, "REQ-OPEN", now=NOW)
    assert bundle["format"] == "fabconnect-dsr-evidence/1"
    assert bundle["generated_at"] == NOW.isoformat()
    assert bundle["request"] | {"recorded_at": None} == {
        "request_id": "REQ-OPEN",
        "rights_invoked": ["access"],
        "jurisdiction": "GDPR",
        "channel": "not recorded",
        "received_at": "2026-11-02T09:30:00+00:00",
        "recorded_at": None,
        "dag_run_id": "dsr__REQ-OPEN__1",
        "status": "waiting_on_partner",
    }
    deadlines = bundle["deadlines"]
    assert deadlines["due_at"] == deadlines["due_at_recomputed"] == "2026-12-02T22:59:59+00:00"
    assert deadlines["due_at_matches_rule"] is True
    assert deadlines["extended_due_at_by_rule"] == "2027-02-02T22:59:59+00:00"
    assert deadlines["paused_days"] == 2
    assert deadlines["first_deadline_after_pauses"] == deadlines["deadline_in_force"] == "2026-12-04T22:59:59+00:00"
    assert deadlines["answered_within_first_deadline"] is None  # still open
    assert deadlines["acknowledge_by"] is None  # GDPR sets no acknowledgement deadline


def test_ccpa_deadlines(ledger: Ledger) -> None:
    deadlines = build_evidence(ledger, "REQ-CCPA", now=NOW)["deadlines"]
    assert deadlines["rule"].startswith("CCPA")
    assert deadlines["due_at"] == "2027-01-04T22:59:59+00:00"  # 45 days after 20 Nov
    assert deadlines["acknowledge_by"] is not None


def test_verification_pauses_and_notices(ledger: Ledger) -> None:
    bundle = build_evidence(ledger, "REQ-OPEN", now=NOW)
    assert bundle["verification"] | {"recorded_at": None} == {
        "outcome": "verified",
        "method": "logged_in_session",
        "verified_at": "2026-11-02T09:31:00+00:00",
        "confirmed_by": None,
        "recorded_at": None,
    }
    assert bundle["pauses"] == [
        {
            "pause_no": 1,
            "reason": "asked for the order number",
            "paused_at": "2026-11-03T10:00:00+00:00",
            "resumed_at": "2026-11-05T10:00:00+00:00",
            "resume_reason": "order number received",
            "counts": True,
            "days": 2,
        }
    ]
    assert [(n["event_type"], n["kind"]) for n in bundle["subject_notices"]] == [("notice.sent", "acknowledgement")]
    assert bundle["extension"] is None


def test_unverified_request(ledger: Ledger) -> None:
    assert build_evidence(ledger, "REQ-LATE", now=NOW)["verification"]["outcome"] == "not recorded yet"


def test_extension_with_reason(ledger: Ledger) -> None:
    extended = build_evidence(ledger, "REQ-OPEN", now=NOW)["deadlines"]["extended_due_at_by_rule"]
    ledger.extend("REQ-OPEN", datetime.fromisoformat(extended), "six partners involved")
    extension = build_evidence(ledger, "REQ-OPEN", now=NOW)["extension"]
    assert extension == {
        "extended_due_at": extended,
        "reason": "six partners involved",
        "recorded_at": NOW.isoformat(),
        "recorded_before_first_deadline": True,
        "notice_sent_at": None,
        "valid": False,
    }  # no extension notice recorded yet


def test_actions_exceptions_art19_and_response(ledger: Ledger) -> None:
    bundle = build_evidence(ledger, "REQ-DONE", now=NOW)
    assert [(a["system"], a["action"], a["status"], a["record_count"]) for a in bundle["actions"]] == [
        ("fabconnect_app.orders", "export", "completed", 7),
        ("precision_parts_gmbh", "notify", "completed", None),
    ]
    assert all(a["at"] and a["attempts"] == 1 for a in bundle["actions"])
    assert bundle["exceptions"] == [
        {
            "system": "fabconnect_app.orders",
            "action": "export",
            "at": bundle["actions"][0]["at"],
            "legal_basis": "legal_obligation",
            "retain_until": "2034-12-31",
        }
    ]
    assert [(n["system"], n["reference"]) for n in bundle["art19_notices"]] == [("precision_parts_gmbh", "PPG-77")]
    response = bundle["response"]
    assert response["status"] == "completed"
    assert response["closed_at"] == "2026-10-20T12:00:00+00:00"
    assert response["outcome_summary"] == "7 records delivered"
    assert response["package"]["location"] == "s3://fabconnect-dsr-exports/REQ-DONE/"
    assert response["package_link_expires_at"] == "2026-10-27T12:00:00+00:00"
    assert bundle["deadlines"]["answered_within_first_deadline"] is True


def test_event_slice_hashes_and_chain(ledger: Ledger) -> None:
    bundle = build_evidence(ledger, "REQ-OPEN", now=NOW)
    events = bundle["events"]
    stored = ledger.events("REQ-OPEN")
    assert [e["seq"] for e in events] == [e.seq for e in stored]
    assert all(e["hash_ok"] for e in events)
    first = events[0]  # an auditor re-computes a hash from the bundle alone
    assert (
        event_hash(
            first["prev_hash"],
            first["seq"],
            "REQ-OPEN",
            first["event_type"],
            first["payload_json"],
            stored[0].created_at,
        )
        == first["hash"]
    )
    head = ledger.events()[-1]
    assert bundle["chain"] == {
        "ok": True,
        "events_checked": head.seq,
        "head_seq": head.seq,
        "head_hash": head.hash,
        "first_broken_seq": None,
        "reason": None,
        "request_events": len(stored),
        "request_event_hashes_ok": True,
    }


def test_tampered_event_shows_in_the_bundle(ledger: Ledger) -> None:
    seq = ledger.events("REQ-OPEN")[1].seq
    with ledger.engine.begin() as conn:
        conn.execute(sa.update(dsr_events).where(dsr_events.c.seq == seq).values(payload='{"kind":"forged"}'))
    bundle = build_evidence(ledger, "REQ-OPEN", now=NOW)
    assert bundle["chain"]["ok"] is False
    assert bundle["chain"]["first_broken_seq"] == seq
    assert bundle["chain"]["request_event_hashes_ok"] is False
    assert [e["seq"] for e in bundle["events"] if not e["hash_ok"]] == [seq]
    assert "DOES NOT VERIFY: first broken row seq" in render_markdown(bundle)


def test_no_personal_data_and_no_package_link(ledger: Ledger) -> None:
    bundles = [build_evidence(ledger, rid, now=NOW) for rid in ("REQ-OPEN", "REQ-DONE", "REQ-LATE", "REQ-CCPA")]
    text = json.dumps(bundles) + "".join(render_markdown(b) for b in bundles)
    assert not any(email in text for email in SUBJECT_EMAILS)
    assert "@" not in text
    assert "subject_fingerprint" not in text
    assert ledger.get_request("REQ-OPEN").subject_fingerprint not in text
    assert PACKAGE_LINK not in text
    assert "X-Amz-Signature" not in text
    # The ledger keeps only a hash of the link in its events, so every event is exported whole.
    assert all(not e["payload_redacted"] and e["payload_json"] for e in bundles[1]["events"])


def test_markdown_has_every_section(ledger: Ledger) -> None:
    markdown = render_markdown(build_evidence(ledger, "REQ-DONE", now=NOW))
    for heading in (
        "# Evidence: data-subject request REQ-DONE",
        "## Request",
        "## Deadlines",
        "## Identity verification",
        "## Pauses",
        "## Extension",
        "## Actions per system",
        "## Exceptions applied (legal basis)",
        "## Art. 19 notices to recipients",
        "## Notices to the data subject",
        "## Response",
        "## Event chain",
    ):
        assert heading in markdown
    assert "| fabconnect_app.orders | export | completed | 7 |" in markdown
    assert "legal_basis: legal_obligation; retain_until: 2034-12-31" in markdown
    assert "Whole ledger chain: verifies" in markdown


def test_write_bundle(ledger: Ledger, tmp_path) -> None:
    bundle = build_evidence(ledger, "REQ-DONE", now=NOW)
    json_path, md_path = write_bundle(bundle, tmp_path / "out")
    assert (json_path.name, md_path.name) == ("evidence-REQ-DONE.json", "evidence-REQ-DONE.md")
    assert json.loads(json_path.read_text()) == bundle
    assert md_path.read_text() == render_markdown(bundle)


def test_unknown_request(ledger: Ledger) -> None:
    with pytest.raises(UnknownRequestError, match="'REQ-NOPE' is not in the ledger"):
        build_evidence(ledger, "REQ-NOPE", now=NOW)
