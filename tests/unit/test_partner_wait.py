"""How long a partner task waits in its process before deferring: short pauses first, then a second."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from include.dsr.rights import partner_exchange


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(round(seconds, 3))
        self.now += seconds


class _Partner:
    """Answers once ``ready_at`` (clock seconds) has passed; counts the polls."""

    def __init__(self, clock: _Clock, ready_at: float | None, first_poll_seconds: float = 0.25) -> None:
        self.clock, self.ready_at, self.polls = clock, ready_at, 0
        self.first_poll_seconds = first_poll_seconds

    def close(self) -> None:
        self.closed = True

    def poll(self, refs: list[str]) -> dict[str, str]:
        self.polls += 1
        done = self.ready_at is not None and self.clock.now >= self.ready_at
        return dict.fromkeys(refs, "completed" if done else "pending")


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(partner_exchange.time, "sleep", clock.sleep)
    monkeypatch.setattr(partner_exchange.time, "monotonic", lambda: clock.now)
    return clock


@pytest.mark.parametrize(
    ("ready_at", "seconds", "state", "pauses"),
    [
        pytest.param(0.2, 3.0, "completed", [0.25], id="a drop box that answers within moments: one short pause"),
        pytest.param(0.6, 3.0, "completed", [0.25, 0.5], id="within a second: two pauses"),
        pytest.param(2.5, 3.0, "completed", [0.25, 0.5, 1.0, 1.0], id="late within the wait"),
        pytest.param(None, 3.0, "pending", [0.25, 0.5, 1.0, 1.0, 0.25], id="never: polled up to the wait, no longer"),
        pytest.param(None, 0.0, "pending", [], id="no wait configured: defers at once"),
    ],
)
def test_the_wait_polls_soon_then_each_second_and_ends_at_its_limit(clock, ready_at, seconds, state, pauses):
    """A partner whose first pause is a quarter of a second (a drop box)."""
    partner = _Partner(clock, ready_at)
    rt = SimpleNamespace(connector=lambda system_key: partner)
    refs = {"REQ-1": ["REQ-1-a"], "REQ-2": ["REQ-2-a"]}
    assert partner_exchange.wait_briefly(rt, "lasercut-bv", refs, "pending", seconds) == state
    assert clock.pauses == pauses
    assert partner.polls == len(pauses)
    assert getattr(partner, "closed", False) == bool(pauses)  # the wait's one connector, closed after it
    assert clock.now <= seconds  # never past the configured wait


def test_an_answer_already_there_is_not_waited_for(clock):
    partner = _Partner(clock, 0.0)
    rt = SimpleNamespace(connector=lambda system_key: partner)
    assert partner_exchange.wait_briefly(rt, "payflow", {"REQ-1": ["r"]}, "completed", 3.0) == "completed"
    assert clock.pauses == []
    assert partner.polls == 0


@pytest.mark.parametrize(
    ("channel", "first", "pauses"),
    [
        pytest.param("api", 1.0, [1.0, 1.0, 1.0], id="api: a poll is a call per subject, each second"),
        pytest.param("s3_dropbox", 0.25, [0.25, 0.5, 1.0, 1.0, 0.25], id="drop box: a poll is one listing, soon"),
    ],
)
def test_each_channel_starts_its_wait_at_its_own_first_pause(clock, channel, first, pauses):
    from include.dsr.connectors import connector_class

    assert connector_class(channel).first_poll_seconds == first
    partner = _Partner(clock, None, first)
    rt = SimpleNamespace(connector=lambda system_key: partner)
    assert partner_exchange.wait_briefly(rt, "p", {"REQ-1": ["r"]}, "pending", 3.0) == "pending"
    assert clock.pauses == pauses
