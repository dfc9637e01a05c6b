"""The product's API connector against the API partner simulator: the status each POST answers is
the status a poll right after would read, so a submission needs no poll of its own."""

from __future__ import annotations

import pytest

from include.demo.partners.faults import Faults
from include.dsr.connectors.partner_api import PartnerApiConnector
from include.dsr.core.data_map import load_data_map
from include.dsr.identity.resolver import ResolvedSubject
from tests.demo.conftest import TOKEN

EMAILS = ["alice.example@example.com", "bob@example.com", "nobody@example.com"]


def _connector(api_partner) -> PartnerApiConnector:
    return PartnerApiConnector(load_data_map().system("payflow"), base_url=api_partner.url, token=TOKEN)


def _refs(refs: dict[str, list[str]]) -> list[str]:
    return [ref for found in refs.values() for ref in found]


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        pytest.param(Faults(), "completed", id="answers at once"),
        pytest.param(Faults(mode="late", late_hours=24), "pending", id="answers a day later"),
        pytest.param(Faults(mode="never"), "pending", id="never answers"),
    ],
)
def test_the_statuses_a_submission_answered_are_what_a_poll_reads(api_partner, faults, expected):
    api_partner.faults = faults
    connector = _connector(api_partner)
    subjects = [ResolvedSubject(f"W-{i}", emails={email}) for i, email in enumerate(EMAILS)]
    refs = _refs(connector.submit(subjects, "access"))
    at_submit = connector.statuses_at_submit(refs)
    assert at_submit == connector.poll(refs)
    assert set(at_submit.values()) == {expected}


def test_refs_this_connector_did_not_submit_have_no_status_at_submit(api_partner):
    """A connector made for the deferred wait, or one that submitted other refs, must poll."""
    first = _connector(api_partner)
    refs = _refs(first.submit([ResolvedSubject("W-1", emails={EMAILS[0]})], "access"))
    assert _connector(api_partner).statuses_at_submit(refs) is None
    assert first.statuses_at_submit([*refs, "W-2-access-0"]) is None
