"""An address's lookup keys are computed once per batch, and forgotten with it."""

from __future__ import annotations

from include.dsr.core import identities


def test_a_batch_computes_each_address_s_keys_once_and_keeps_none_after_it(monkeypatch):
    computed: list[str] = []
    real = identities._email_key_candidates
    monkeypatch.setattr(identities, "_email_key_candidates", lambda email: computed.append(email) or real(email))

    @identities.remembering_email_keys
    def lookups_of_a_batch(emails: list[str]) -> list:
        # every collection with an email column asks again
        return [identities.email_key_candidates(e) for _ in range(11) for e in emails]

    emails = ["zoë@example.com", "ALICE@example.com".lower()]
    found = lookups_of_a_batch(emails)
    assert computed == emails  # once each, not eleven times
    assert found[0] == real("zoë@example.com")
    assert identities._REMEMBERED.get() is None  # nothing of the batch left in the process
    lookups_of_a_batch(emails)
    assert computed == emails * 2  # a new batch computes them afresh
    identities.email_key_candidates("bob@example.com")  # outside a batch: computed, not kept
    assert identities._REMEMBERED.get() is None
