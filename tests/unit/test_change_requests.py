"""The run confs of rectification and objection: what is accepted, normalised, and refused (and how).

Classes of input rather than examples: corrected values in other scripts and with other
whitespace, phones in national formats and with other dashes, postal codes per country, names
with digits or invisible characters; purposes the data map does not know, or whose legal basis
an objection does not reach. Messages name the field and never repeat the value.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from include.dsr.core.corrections import normalize_value, postal_code_problem
from include.dsr.core.errors import RequestValidationError
from include.dsr.core.request import (
    CONSENT_WITHDRAWAL,
    DIRECT_MARKETING,
    LEGITIMATE_INTEREST,
    objection_kind,
    parse_request,
)
from include.dsr.sla.deadlines import due_at

BASE = {"request_id": "REQ-1", "subject": {"email": "a@example.com"}}


def rectify(*corrections: dict, **subject) -> dict:
    return {**BASE, "subject": {**BASE["subject"], **subject}, "corrections": list(corrections)}


@pytest.mark.parametrize(
    ("fmt", "raw", "expected"),
    [
        ("email", "  Zoë.Ångström@Exämple.DE\t", "zoë.ångström@exämple.de"),
        ("email", "\u00a0ANA@EXAMPLE.COM\u2003", "ana@example.com"),
        ("email", "Zoe\u0308@example.com", "zoë@example.com"),  # decomposed ë becomes NFC
        ("phone", "+49 (30) 1234\u20115678", "+493012345678"),  # a non-breaking hyphen
        ("phone", "+44\u00a020 7946 0958", "+442079460958"),
        ("name", "Łukasz  Wiśniewski", "Łukasz Wiśniewski"),
        ("name", "Ζωή", "Ζωή"),
        ("name", "O’Brien-Smith Jr.", "O’Brien-Smith Jr."),
        ("name", "山田", "山田"),
        ("text", "Acme\tTooling\n Ltd", "Acme Tooling Ltd"),
        ("country", " de ", "DE"),
        ("postal_code", " sw1a 1aa ", "SW1A 1AA"),
    ],
)
def test_values_of_every_format_are_normalised(fmt, raw, expected):
    assert normalize_value(fmt, raw) == (expected, None)


@pytest.mark.parametrize(
    ("fmt", "raw"),
    [
        ("email", "no-at-sign.example.com"),
        ("email", "two@@example.com"),
        ("email", "a@b"),
        ("phone", "12345"),
        ("phone", "call me"),
        ("name", "R2-D2"),
        ("name", "--"),
        ("name", "x" * 101),
        ("text", "zero\u200bwidth"),
        ("text", "bell\x07"),
        ("text", "y" * 201),
        ("country", "XX"),
        ("country", "DEU"),
        ("postal_code", "!"),
        ("email", 42),
        ("name", "   "),
    ],
)
def test_malformed_values_are_refused(fmt, raw):
    value, problem = normalize_value(fmt, raw)
    assert value is None
    assert problem


def test_a_national_phone_reads_in_the_requests_region():
    assert normalize_value("phone", "030 1234567", "DE") == ("+49301234567", None)
    assert normalize_value("phone", "0612345678", "NL") == ("+31612345678", None)


@pytest.mark.parametrize(
    ("code", "country", "ok"),
    [
        ("10115", "DE", True),
        ("1011", "DE", False),
        ("1011 AB", "NL", True),
        ("1011AB", "NL", True),
        ("AB 1011", "NL", False),
        ("30-001", "PL", True),
        ("30001", "PL", False),
        ("D02 X285", "IE", True),
        ("123 45", "SE", True),
        ("ABC", "ZZ", True),  # no country rule: the generic one applied at parse time
    ],
)
def test_postal_codes_follow_their_country(code, country, ok):
    assert (postal_code_problem(code, country) is None) == ok


def test_a_rectification_conf_is_parsed_into_corrections():
    request = parse_request(
        rectify(
            {"field": "accounts.email", "value": " New@Example.COM "},
            {"field": "addresses.postal_code", "value": "1011ab", "row_id": 7},
            {"field": "addresses.country", "value": "nl", "row_id": 7},
        ),
        "rectification",
    )
    assert [(c.name, c.value, c.row_id) for c in request.corrections] == [
        ("accounts.email", "new@example.com", None),
        ("addresses.postal_code", "1011AB", 7),
        ("addresses.country", "NL", 7),
    ]


@pytest.mark.parametrize(
    ("corrections", "message"),
    [
        ([{"field": "accounts.password_hash", "value": "secret-value"}], "cannot be rectified"),
        ([{"field": "orders.total_eur", "value": "99999"}], "cannot be rectified"),
        ([{"field": "accounts.email", "value": "bad-address-value"}], "not an email address"),
        ([{"field": "accounts.email", "value": "a@example.com"}] * 2, "corrected twice"),
        ([{"field": "addresses.city", "value": "Köln", "row_id": "7"}], "positive integer"),
        ([{"field": "addresses.city", "value": "Köln", "row_id": True}], "positive integer"),
        ([{"field": "addresses.city", "value": "Köln", "extra": 1}], "must be an object"),
        (
            [
                {"field": "addresses.postal_code", "value": "1011", "row_id": 3},
                {"field": "addresses.country", "value": "DE", "row_id": 3},
            ],
            "postal code of DE",
        ),
        ("accounts.email=new@example.com", "give a list"),
        ([{"field": "accounts.email", "value": f"u{i}@example.com"} for i in range(21)], "at most 20"),
    ],
)
def test_bad_corrections_are_refused_naming_the_field_never_the_value(corrections, message):
    with pytest.raises(RequestValidationError, match=message) as refused:
        parse_request({**BASE, "corrections": corrections}, "rectification")
    assert "refused before anything was touched" in str(refused.value)
    for item in corrections if isinstance(corrections, list) else []:
        if isinstance(item, dict) and len(str(item.get("value"))) > 6:
            assert str(item["value"]) not in str(refused.value)


def test_corrections_belong_to_rectification_only():
    with pytest.raises(RequestValidationError, match="unknown keys"):
        parse_request({**BASE, "corrections": [{"field": "accounts.email", "value": "b@example.com"}]}, "access")


def test_objection_purposes_are_sorted_by_their_legal_basis():
    assert objection_kind("marketing") == DIRECT_MARKETING
    assert objection_kind("testimonials") == CONSENT_WITHDRAWAL
    for purpose in ("pricing", "service_improvement", "fraud_prevention", "security"):
        assert objection_kind(purpose) == LEGITIMATE_INTEREST
    request = parse_request(
        {**BASE, "purposes": ["marketing", "pricing", "marketing"], "grounds": " mine "}, "objection"
    )
    assert request.purposes == ("marketing", "pricing")
    assert request.grounds == "mine"


@pytest.mark.parametrize(
    ("purposes", "message"),
    [
        (["payments"], "rests on contract"),
        (["legal_obligations"], "rests on legal obligation"),
        (["telepathy"], "unknown purpose"),
        ([], "give the purposes"),
        ("marketing", "give the purposes"),
        ([1], "give the purposes"),
    ],
)
def test_objections_the_law_does_not_cover_are_refused(purposes, message):
    with pytest.raises(RequestValidationError, match=message):
        parse_request({**BASE, "purposes": purposes}, "objection")


def test_a_ccpa_opt_out_is_due_in_15_business_days_and_other_ccpa_requests_in_45_days():
    received = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # a Friday
    opt_out = due_at(received, "CCPA", right="objection")
    assert opt_out.date().isoformat() == "2026-12-11"  # 15 working days (no German holiday in between)
    assert due_at(received, "CCPA", extended=True, right="objection") == opt_out  # no extension
    assert due_at(received, "CCPA", right="access").date().isoformat() == "2027-01-04"
    assert due_at(received, "GDPR", right="objection") == due_at(received, "GDPR")


def test_the_evidence_bundle_shows_a_ccpa_opt_out_with_its_own_deadline(tmp_path):
    from include.dsr.evidence.bundle import build_evidence
    from include.dsr.ledger.api import Ledger

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.create_schema()
    received = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    for right, jurisdiction in (("objection", "CCPA"), ("rectification", "GDPR"), ("restriction", "GDPR")):
        due = due_at(received, jurisdiction, right=right)
        ledger.record_request(f"REQ-{right}", right, jurisdiction, "f" * 64, received, due)
    opt_out = build_evidence(ledger, "REQ-objection", now=datetime(2026, 11, 25, tzinfo=UTC))
    assert opt_out["request"]["rights_invoked"] == ["objection"]
    assert opt_out["deadlines"]["rule"] == "CCPA: opt-out of sale / sharing within 15 business days"
    assert opt_out["deadlines"]["due_at"] == opt_out["deadlines"]["due_at_recomputed"]
    assert opt_out["deadlines"]["due_at"].startswith("2026-12-11")
    rectified = build_evidence(ledger, "REQ-rectification", now=datetime(2026, 11, 25, tzinfo=UTC))
    assert rectified["deadlines"]["due_at"].startswith("2026-12-21")  # one month (20 Dec is a Sunday)
    ledger.close()
