"""The run conf is validated before anything is touched, with messages that name the key."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from include.dsr.core.errors import RequestValidationError
from include.dsr.core.request import parse_request

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
