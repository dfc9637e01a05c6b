"""Malformed and hostile run confs, one table for every way in: ``parse_request`` (unit), the
REST API against a running Airflow, and ``dsr submit --conf`` (e2e).

Each case says which field its refusal must name and who refuses it first through REST:
``api`` is the api-server itself (HTTP 400 from the DAG's Params, so no run exists), ``run`` is
the run's ``validate_request`` (what a JSON schema cannot say: unknown keys, a time in the
future, identities given twice differently, a request id the ledger holds for someone else,
receivers not declared). The CLI refuses every case locally, before sending, except
``cli=False`` ones, which only the ledger can judge.
"""

from __future__ import annotations

from dataclasses import dataclass

EMAIL = "bad.input.subject@example.com"
OTHER_EMAIL = "someone.else.entirely@example.com"
VERIFIED = {"method": "email_link", "verified_at": "2026-11-20T10:00:00Z"}
#: The request id the ledger holds for another subject (the e2e test records it first).
REUSED_REQUEST_ID = "E2E-BAD-REUSED"
#: The receiving controller every test declares (``DSR_RECEIVING_CONTROLLERS``), so a refused
#: ``transmit_to`` is refused for what it is, not because nothing is declared.
DECLARED_RECEIVER = "https://receiver.example/dsr"


@dataclass(frozen=True)
class BadConf:
    name: str
    right: str
    conf: dict
    field: str  # the refusal's message names it
    refused_by: str  # "api" (HTTP 400, no run) or "run" (validate_request fails the run)
    cli: bool = True  # the CLI refuses it before sending
    reason: str = ""  # and, where the field alone would not tell, why


def _conf(name: str, **changes) -> dict:
    conf = {"request_id": f"E2E-BAD-{name}", "subject": {"email": EMAIL}, "verification": dict(VERIFIED)}
    for key, value in changes.items():
        if value is DROP:
            conf.pop(key, None)
        else:
            conf[key] = value
    return conf


DROP = object()


def _case(name: str, right: str, field: str, refused_by: str, cli: bool = True, reason: str = "", **changes) -> BadConf:
    return BadConf(name, right, _conf(name, **changes), field, refused_by, cli, reason)


CASES = [
    # -- the request id -------------------------------------------------------------------
    _case("no-id", "access", "request_id", "api", request_id=DROP),
    _case("id-int", "access", "request_id", "api", request_id=42),
    _case("id-sql", "access", "request_id", "api", request_id="x'; DROP TABLE dsr_requests;--"),
    _case("id-path", "access", "request_id", "api", request_id="../../_keys/REQ-1"),
    _case("id-huge", "access", "request_id", "api", request_id="R" * 10_000),
    _case("id-email", "access", "request_id", "api", request_id=EMAIL),
    _case("id-reused", "access", "request_id", "run", cli=False, request_id=REUSED_REQUEST_ID),
    # -- the subject ----------------------------------------------------------------------
    _case("no-identity", "access", "subject", "run", subject={}),
    _case("subject-string", "access", "subject", "api", subject=EMAIL),
    _case("subject-unknown-key", "access", "subject", "api", subject={"email": EMAIL, "name": "Maria"}),
    _case("email-malformed", "access", "subject", "api", subject={"email": "maria-at-example.com"}),
    _case("email-huge", "access", "subject", "api", subject={"email": "m" * 300 + "@example.com"}),
    _case("email-nul", "access", "subject", "api", subject={"email": "maria\x00@example.com"}),
    _case("email-zero-width", "access", "subject", "api", subject={"email": "ma\u200bria@example.com"}),
    _case("email-bidi", "access", "subject.email", "run", subject={"email": "maria\u202e@example.com"}),
    _case("email-injection", "access", "subject", "api", subject={"email": "' OR 1=1 --@example.com"}),
    _case("phone-letters", "access", "subject", "api", subject={"phone": "+49 30 CALL-ME"}),
    _case("phone-unreadable", "access", "subject.phone", "run", subject={"phone": "+000 000 000"}),
    _case("account-string", "access", "subject", "api", subject={"account_id": "abc"}),
    _case("account-negative", "access", "subject", "api", subject={"account_id": -5}),
    _case("account-bool", "access", "subject", "api", subject={"account_id": True}),
    _case("account-huge", "access", "subject", "api", subject={"account_id": 10**30}),
    _case("form-email-malformed", "access", "subject_email", "api", subject=DROP, subject_email="no-at-sign"),
    _case("form-phone-letters", "access", "subject_phone", "api", subject=DROP, subject_phone="call me maybe"),
    _case(
        "identities-disagree",
        "access",
        "subject_email",
        "run",
        subject={"email": EMAIL},
        subject_email=OTHER_EMAIL,
    ),
    # -- the other fields -----------------------------------------------------------------
    _case("unknown-key", "access", "unknown keys", "run", colour="red"),
    _case("key-of-another-right", "access", "unknown keys", "run", action="apply"),
    _case("received-naive", "access", "received_at", "api", received_at="2026-11-20T10:00:00"),
    _case("received-future", "access", "received_at", "run", received_at="2099-01-01T00:00:00Z"),
    _case("received-words", "access", "received_at", "api", received_at="yesterday"),
    _case("verification-method", "access", "verification", "api", verification={**VERIFIED, "method": "vibes"}),
    _case("verification-no-time", "access", "verification", "api", verification={"method": "email_link"}),
    _case("form-verification-method", "access", "verification_method", "api", verification_method="vibes"),
    _case(
        "verification-misses-identity",
        "access",
        "verification.method",
        "run",
        verification={**VERIFIED, "method": "sms_code"},
    ),
    _case("jurisdiction", "access", "jurisdiction", "api", jurisdiction="LGPD"),
    _case("dry-run-text", "access", "dry_run", "api", dry_run="yes"),
    _case("restriction-action", "restriction", "action", "api", action="freeze"),
    _case(
        "transmit-metadata-service",
        "portability",
        "transmit_to",
        "run",
        reason="must use https",
        transmit_to="http://169.254.169.254/",
    ),
    _case(
        "transmit-undeclared",
        "portability",
        "transmit_to",
        "run",
        reason="not a declared receiving controller",
        transmit_to="https://10.0.0.7:5432/dsr",
    ),
    _case(
        "transmit-userinfo",
        "portability",
        "transmit_to",
        "run",
        reason="credentials in the URL",
        transmit_to="https://receiver.example@127.0.0.1/dsr",
    ),
    _case("transmit-gopher", "portability", "transmit_to", "api", transmit_to="gopher://127.0.0.1:6379/_FLUSHALL"),
    _case("objection-purpose", "objection", "purposes", "run", purposes=["mind_reading"]),
    _case("objection-grounds-huge", "objection", "grounds", "api", purposes=["marketing"], grounds="g" * 5000),
    _case("conf-huge", "access", "conf", "run", note="n" * 100_000),
    _case(
        "rectification-field",
        "rectification",
        "corrections",
        "run",
        corrections=[{"field": "accounts.id", "value": "1"}],
    ),
    _case("wave-with-subject", "erasure", "subject", "run", wave="_waves/BAD.jsonl"),
]
