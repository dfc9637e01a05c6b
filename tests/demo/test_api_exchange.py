"""The product's API connector against the API partner simulator: the status each POST answers is
the status a poll right after would read, so a submission needs no poll of its own."""

from __future__ import annotations

import pytest

from include.demo.partners.faults import Faults
from include.dsr.connectors.partner_api import PartnerApiConnector
from include.dsr.core.data_map import load_data_map
from include.dsr.core.errors import TransientError
from include.dsr.identity.resolver import ResolvedSubject
from tests.demo.conftest import TOKEN

EMAILS = ["alice.example@example.com", "bob@example.com", "nobody@example.com"]


@pytest.fixture
def connector(api_partner):
    made = []

    def make() -> PartnerApiConnector:
        made.append(PartnerApiConnector(load_data_map().system("payflow"), base_url=api_partner.url, token=TOKEN))
        return made[-1]

    yield make
    for each in made:
        each.close()


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
def test_the_statuses_a_submission_answered_are_what_a_poll_reads(api_partner, connector, faults, expected):
    api_partner.faults = faults
    connector = connector()
    subjects = [ResolvedSubject(f"W-{i}", emails={email}) for i, email in enumerate(EMAILS)]
    refs = _refs(connector.submit(subjects, "access"))
    at_submit = connector.statuses_at_submit(refs)
    assert at_submit == connector.poll(refs)
    assert set(at_submit.values()) == {expected}


def test_refs_this_connector_did_not_submit_have_no_status_at_submit(connector):
    """A connector made for the deferred wait, or one that submitted other refs, must poll."""
    first = connector()
    refs = _refs(first.submit([ResolvedSubject("W-1", emails={EMAILS[0]})], "access"))
    assert connector().statuses_at_submit(refs) is None
    assert first.statuses_at_submit([*refs, "W-2-access-0"]) is None


def test_a_submission_that_failed_half_way_leaves_no_status_and_its_retry_has_them(api_partner, connector):
    """A 500 on one POST fails the submission (Airflow retries it); the retry's answers are read."""
    api_partner.faults = Faults(mode="fail", fail_count=1)
    connector = connector()
    subjects = [ResolvedSubject(f"W-{i}", emails={email}) for i, email in enumerate(EMAILS)]
    with pytest.raises(TransientError, match="500"):
        connector.submit(subjects, "access")
    refs = _refs(connector.submit(subjects, "access"))
    assert connector.statuses_at_submit(refs) == connector.poll(refs) == dict.fromkeys(refs, "completed")
