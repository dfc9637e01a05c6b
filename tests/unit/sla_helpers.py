"""Shared pieces of the SLA, notice and deadline tests: a clock, requests, a real SMTP sink."""

from __future__ import annotations

from datetime import datetime, timedelta

from include.dsr.core.data_map import Controller
from include.dsr.ledger.api import Ledger, RequestRow, subject_fingerprint
from include.dsr.sla import deadlines as sla

SECRET = "test-secret"
SUBJECT_EMAIL = "maria.lopez@example.com"
OPS_EMAIL = "ops-desk@example.com"
CONTROLLER = Controller(
    name="Fabconnect",
    address="Fabconnect, Privacy Team, Example Street 1, 10115 Berlin, Germany",
    privacy_contact="privacy@example.com",
    supervisory_authority="You may lodge a complaint with a supervisory authority (Art. 77 GDPR) and you have "
    "the right to an effective judicial remedy (Art. 79 GDPR).",
    automated_decisions="None.",
)


def record(
    ledger: Ledger,
    request_id: str,
    received: datetime,
    right: str = "access",
    jurisdiction: str = "GDPR",
    email: str = SUBJECT_EMAIL,
    dag_run_id: str | None = None,
) -> RequestRow:
    """Record a request received at ``received`` with its computed due date."""
    return ledger.record_request(
        request_id,
        right,
        jurisdiction,
        subject_fingerprint({"email": email}, SECRET),
        received,
        sla.due_at(received, jurisdiction),
        dag_run_id=dag_run_id or f"manual__{request_id}",
    )


def days_ago(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)
