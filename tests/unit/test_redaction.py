"""Text from outside (a partner's error body) is cleaned before it reaches logs or the ledger."""

from __future__ import annotations

import pytest

from include.dsr.core.pii import REDACTED, redact


@pytest.mark.parametrize(
    ("text", "identities", "gone"),
    [
        pytest.param("no customer Maria.Lopez@Example.COM here", (), "Maria.Lopez@Example.COM", id="any address"),
        pytest.param("customer MARIA.LOPEZ@EXAMPLE.COM", ("maria.lopez@example.com",), "MARIA", id="known, other case"),
        pytest.param("call +34 911 000 001 please", (), "911 000 001", id="an international number"),
        pytest.param("call 0151 2345678", (), "2345678", id="a national number"),
        pytest.param("Seán O'Brien not found", ("Seán O'Brien",), "Seán", id="a known name"),
        pytest.param("zoë@exämple.de missing", (), "exämple", id="an internationalised address"),
    ],
)
def test_identities_are_removed(text, identities, gone):
    cleaned = redact(text, identities)
    assert gone not in cleaned
    assert REDACTED in cleaned


def test_ids_dates_and_status_codes_stay_readable():
    text = "request fabconnect-access-DSR-20261125-c151a6 failed with 503 after 3 attempts"
    assert redact(text) == text


def test_control_characters_and_length_are_cut():
    cleaned = redact("line one\nline two\x00\x1b[31m" + "x" * 500)
    assert "\n" not in cleaned
    assert "\x00" not in cleaned
    assert "\x1b" not in cleaned
    assert len(cleaned) == 200
    assert cleaned.endswith("…")
