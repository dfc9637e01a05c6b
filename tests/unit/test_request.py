"""The run conf is validated before anything is touched, with messages that name the key."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from include.dsr.core.errors import RequestValidationError
from include.dsr.core.request import parse_request
from tests.bad_confs import CASES, DECLARED_RECEIVER, EMAIL

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_a_good_conf_is_normalised():
    request = parse_request(
        {
            "request_id": "DSR-1",
            "subject": {"email": " Maria.Lopez@Example.com ", "phone": "+49 30 123456"},
            "received_at": "2026-11-20T09:30:00Z",
        },
        "access",
        now=NOW,
    )
    assert request.subject.identities() == {"email": "maria.lopez@example.com", "phone": "+4930123456"}
    assert request.received_at == datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    assert request.jurisdiction == "GDPR"
    assert request.verification is None


def test_received_at_defaults_to_now():
    assert parse_request({"request_id": "DSR-2", "subject": {"account_id": 7}}, "access", now=NOW).received_at == NOW


@pytest.mark.parametrize(
    ("conf", "right", "message"),
    [
        pytest.param({"subject": {"email": "a@example.com"}}, "access", "request_id: required", id="no request id"),
        pytest.param(
            {"request_id": "a@example.com", "subject": {"email": "a@example.com"}},
            "access",
            "request_id",
            id="email as request id",
        ),
        pytest.param({"request_id": "DSR-3", "subject": {}}, "access", "at least one identity", id="no identity"),
        pytest.param(
            {"request_id": "DSR-3", "subject": {"email": "nope"}}, "access", "malformed email", id="bad email"
        ),
        pytest.param(
            {"request_id": "DSR-3", "subject": {"phone": "12ab"}}, "access", "international format", id="bad phone"
        ),
        pytest.param(
            {"request_id": "DSR-3", "subject": {"account_id": "x"}},
            "access",
            "account_id: must be an integer",
            id="bad account id",
        ),
        pytest.param(
            {"request_id": "DSR-3", "subject": {"email": "a@example.com"}, "received_at": "2026-12-01T00:00:00Z"},
            "access",
            "in the future",
            id="received in the future",
        ),
        pytest.param(
            {"request_id": "DSR-3", "subject": {"email": "a@example.com"}, "received_at": "2026-11-01T10:00:00"},
            "access",
            "timezone offset",
            id="naive received_at",
        ),
        pytest.param(
            {"request_id": "DSR-3", "subject": {"email": "a@example.com"}, "colour": "red"},
            "access",
            "unknown keys ['colour']",
            id="unknown key",
        ),
        pytest.param(
            {"request_id": "DSR-3", "subject": {"email": "a@example.com"}, "transmit_to": "https://x.example"},
            "access",
            "unknown keys ['transmit_to']",
            id="portability key on access",
        ),
        pytest.param(
            {"request_id": "DSR-3", "subject": {"email": "a@example.com"}, "transmit_to": "ftp://x"},
            "portability",
            "transmit_to",
            id="transmit_to not http",
        ),
        pytest.param(
            {"request_id": "DSR-3", "subject": {"email": "a@example.com"}},
            "restriction",
            "action: must be one of",
            id="restriction without action",
        ),
        pytest.param(
            {"request_id": "DSR-3", "subject": {"email": "a@example.com"}, "jurisdiction": "LGPD"},
            "access",
            "jurisdiction",
            id="unknown jurisdiction",
        ),
        pytest.param(
            {
                "request_id": "DSR-3",
                "subject": {"email": "a@example.com"},
                "verification": {"method": "vibes", "verified_at": "2026-11-20T09:30:00Z"},
            },
            "access",
            "verification.method",
            id="unknown verification method",
        ),
    ],
)
def test_bad_confs_are_refused_naming_the_key(conf, right, message):
    with pytest.raises(RequestValidationError) as exc_info:
        parse_request(conf, right, now=NOW)
    assert message in str(exc_info.value)
    assert "refused before anything was touched" in str(exc_info.value)


def test_every_problem_is_listed_and_no_identity_is_echoed():
    with pytest.raises(RequestValidationError) as exc_info:
        parse_request(
            {"request_id": "DSR-4", "subject": {"email": "secret-bad-email", "phone": "x"}, "colour": 1},
            "access",
            now=NOW,
        )
    text = str(exc_info.value)
    assert text.count(";") >= 2
    assert "secret-bad-email" not in text


@pytest.mark.parametrize("case", [c for c in CASES if c.cli], ids=lambda c: c.name)
def test_hostile_confs_are_refused_naming_the_field(case, monkeypatch):
    from include import settings

    monkeypatch.setattr(settings, "RECEIVING_CONTROLLERS", (DECLARED_RECEIVER,))
    from include.dsr.core.request import is_wave, parse_wave

    check = (lambda: parse_wave(case.conf, case.right)) if is_wave(case.conf) else None
    check = check or (lambda: parse_request(case.conf, case.right, now=NOW))
    with pytest.raises(RequestValidationError) as exc_info:
        check()
    text = str(exc_info.value)
    assert case.field in text
    assert case.reason in text
    assert "refused before anything was touched" in text
    assert EMAIL not in text


def test_the_table_covers_every_kind_of_bad_input():
    assert len(CASES) >= 25
    assert {c.refused_by for c in CASES} == {"api", "run"}
    assert {c.right for c in CASES} >= {"access", "portability", "restriction", "objection", "rectification", "erasure"}


def test_the_form_fields_are_the_subject_and_verification_of_the_contract():
    request = parse_request(
        {
            "request_id": "DSR-5",
            "subject": {"email": None, "phone": None, "account_id": None},
            "subject_email": "Maria@Example.com",
            "subject_account_id": 7,
            "verification_method": "email_link",
            "verified_at": None,
        },
        "access",
        now=NOW,
    )
    assert request.subject.identities() == {"email": "maria@example.com", "account_id": 7}
    assert request.verification is not None
    assert (request.verification.method, request.verification.verified_at) == ("email_link", NOW)


def test_the_same_identity_given_both_ways_is_taken_once():
    request = parse_request(
        {"request_id": "DSR-6", "subject": {"email": "a@example.com"}, "subject_email": " a@example.com "},
        "access",
        now=NOW,
    )
    assert request.subject.identities() == {"email": "a@example.com"}


@pytest.mark.parametrize(
    ("url", "declared", "accepted"),
    [
        pytest.param("https://rx.example/dsr/in?token=1", ("https://rx.example/dsr",), True, id="below a declared"),
        pytest.param("https://RX.example:443/dsr", ("https://rx.example/dsr",), True, id="default port, case"),
        pytest.param("https://rx.example/dsrx", ("https://rx.example/dsr",), False, id="not a path segment"),
        pytest.param("https://rx.example.evil/dsr", ("https://rx.example/dsr",), False, id="suffix host"),
        pytest.param("https://rx.example@10.0.0.1/dsr", ("https://rx.example/",), False, id="userinfo trick"),
        pytest.param("https://rx.example:8443/dsr", ("https://rx.example/dsr",), False, id="other port"),
        pytest.param("http://rx.example/dsr", ("http://rx.example/dsr",), False, id="plain http declared"),
        pytest.param("http://127.0.0.1:9/dsr", ("http://127.0.0.1:9/",), True, id="declared loopback http"),
        pytest.param("http://127.0.0.1:5432/", ("http://127.0.0.1:9/",), False, id="undeclared loopback port"),
        pytest.param("https://rx.example/dsr", (), False, id="nothing declared"),
        pytest.param("https://[::1", ("https://rx.example/",), False, id="broken URL"),
    ],
)
def test_only_declared_receivers_over_https_get_packages(url, declared, accepted):
    from include.dsr.core.receivers import receiver_problem

    assert (receiver_problem(url, declared) is None) is accepted


def test_package_links_last_at_most_seven_days_and_packages_are_encrypted_outside_the_demo(monkeypatch):
    from include import settings

    assert settings.package_link_seconds(None) == 7 * 24 * 3600
    assert settings.package_link_seconds(str(30 * 24 * 3600)) == 7 * 24 * 3600
    assert settings.package_link_seconds("0") == 60
    monkeypatch.delenv("DSR_ENCRYPT_PACKAGES", raising=False)
    monkeypatch.setenv("DSR_DEMO", "1")
    assert settings.encrypt_packages() is False
    monkeypatch.delenv("DSR_DEMO")
    assert settings.encrypt_packages() is True
    monkeypatch.setenv("DSR_ENCRYPT_PACKAGES", "0")
    assert settings.encrypt_packages() is False


def test_the_form_patterns_take_every_blank_and_dash_the_engine_strips():
    import re

    from include.dsr.core.identities import PHONE_DASHES, WHITESPACE
    from include.dsr.core.request import EMAIL_FIELD_PATTERN, PHONE_FIELD_PATTERN

    for blank in WHITESPACE:
        assert re.match(EMAIL_FIELD_PATTERN, f"{blank}maria@example.com{blank}"), repr(blank)
        assert re.match(PHONE_FIELD_PATTERN, f"{blank}+49{blank}30{blank}1234567{blank}"), repr(blank)
    for dash in PHONE_DASHES:
        assert re.match(PHONE_FIELD_PATTERN, f"+49 30{dash}1234567"), repr(dash)
    assert len(EMAIL_FIELD_PATTERN) < 200  # it is quoted in the api-server's 400 message
