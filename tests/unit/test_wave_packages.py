"""A wave's packages: queued at once, recorded a chunk at a time in order, and any failure (a
package, the ledger) stops the packages not yet started (the task fails; its retry rebuilds
every package idempotently)."""

from __future__ import annotations

import threading
from contextlib import nullcontext
from types import SimpleNamespace

import pytest

from include.dsr.connectors import staging
from include.dsr.core.errors import CheckFailedError
from include.dsr.package import build
from include.dsr.rights import gathering, package_writers, waves

WAVE = 400
FAILS_AT = "W-0150"


@pytest.fixture
def wave(monkeypatch):
    ids = [f"W-{i:04d}" for i in range(WAVE)]
    started: list[str] = []
    recorded: list[list[str]] = []
    given_earlier: dict[str, set | None] = {}
    lock, released = threading.Lock(), threading.Event()

    class Ledger:
        def get_requests(self, wanted):
            return dict.fromkeys(wanted)

        def batch(self):
            return nullcontext()

    def write(rt, rid, right, row, staging=None, earlier_keys=None):
        with lock:
            started.append(rid)
            given_earlier[rid] = earlier_keys
        if rid == rt.package_fails_at:
            raise OSError("object store unreachable")
        if rt.package_fails_at and rid > rt.package_fails_at:
            released.wait(timeout=2)  # still writing when the failure is seen
        return SimpleNamespace(request_id=rid)

    def record(rt, packages):
        recorded.append([])  # one ledger transaction
        for rid, package, _receipt in packages:
            assert package.request_id == rid
            if rid == rt.record_fails_at:
                raise RuntimeError("ledger unreachable")
            recorded[-1].append(rid)
        return [{"records": 1} for _ in packages]

    monkeypatch.setattr(gathering, "is_wave_batch", lambda rt, batch_id: True)
    monkeypatch.setattr(
        gathering, "delivered_subjects", lambda rt, batch_id: [SimpleNamespace(request_id=i) for i in ids]
    )
    monkeypatch.setattr(gathering, "write_request_package", write)
    monkeypatch.setattr(gathering, "record_packages", record)
    monkeypatch.setattr(waves, "confs", lambda rt, conf, right: {rid: {} for rid in ids})
    monkeypatch.setattr(
        staging, "StagedBatch", lambda _: SimpleNamespace(slice=lambda rid: rid, request_ids=lambda: rt.tagged)
    )
    monkeypatch.setattr(build, "requests_with_keys", lambda s3, bucket, wanted: rt.rebuilt)
    rt = SimpleNamespace(
        ledger=Ledger(),
        staging=lambda batch_id: None,
        s3=None,
        s3_maker=lambda: None,  # no maker of new clients: the packages are written by threads
        exports_bucket="exports",
        package_fails_at=None,
        record_fails_at=None,
        rebuilt=set(),
        tagged=set(ids[:10]),  # request ids the staged rows carry
    )
    yield SimpleNamespace(
        rt=rt, ids=ids, started=started, recorded=recorded, released=released, given_earlier=given_earlier
    )
    released.set()


def _build_releasing(wave):
    """Run the build; once it has raised, let the slow packages still running finish."""
    try:
        return gathering.build_package(wave.rt, "W", "access")
    finally:
        wave.released.set()


def test_every_package_is_recorded_once_in_chunks_in_order(wave):
    result = gathering.build_package(wave.rt, "W", "access")
    assert result == {"request_id": "W", "packages": WAVE, "records": WAVE}
    assert [rid for chunk in wave.recorded for rid in chunk] == wave.ids
    assert [len(chunk) for chunk in wave.recorded] == [gathering.CLOSE_CHUNK] * (WAVE // gathering.CLOSE_CHUNK)
    assert sorted(wave.started) == wave.ids


def test_a_failed_package_stops_the_wave_and_records_only_the_chunks_before_it(wave):
    wave.rt.package_fails_at = FAILS_AT
    with pytest.raises(OSError, match="unreachable"):
        _build_releasing(wave)
    assert [rid for chunk in wave.recorded for rid in chunk] == wave.ids[: gathering.CLOSE_CHUNK]
    # up to the failure every package starts; behind it, at most one per thread (they block)
    assert len(wave.started) <= 151 + package_writers.PACKAGE_THREADS, "queued packages were not cancelled"


def test_a_ledger_failure_while_recording_cancels_the_packages_not_started(wave):
    """The ledger, not a package, fails: the queued packages must not all be written first."""
    wave.rt.package_fails_at = "W-0130"  # only to make the packages behind it slow
    wave.rt.record_fails_at = "W-0050"
    with pytest.raises(RuntimeError, match="ledger unreachable"):
        _build_releasing(wave)
    assert wave.recorded == [wave.ids[:50]]  # the chunk's transaction is the caller's to roll back
    assert len(wave.started) <= 131 + package_writers.PACKAGE_THREADS


@pytest.mark.parametrize(
    ("rebuilt", "listed_by_the_package"),
    [
        pytest.param(set(), set(), id="first-build-lists-nothing-per-package"),
        pytest.param({"W-0007", "W-0300"}, {"W-0007", "W-0300"}, id="earlier-builds-list-their-own-prefix"),
        pytest.param(None, set(map("W-{:04d}".format, range(WAVE))), id="no-shared-listing-each-lists"),
    ],
)
def test_only_packages_with_keys_from_an_earlier_build_list_their_prefix(wave, rebuilt, listed_by_the_package):
    wave.rt.rebuilt = rebuilt
    gathering.build_package(wave.rt, "W", "access")
    assert {rid for rid, earlier in wave.given_earlier.items() if earlier is None} == listed_by_the_package
    assert all(earlier == set() for rid, earlier in wave.given_earlier.items() if rid not in listed_by_the_package)


def test_rows_tagged_for_a_request_outside_the_wave_stop_it_before_any_package(wave):
    wave.rt.tagged = {wave.ids[0], "OTHER-WAVE-00001"}  # a unit answered for someone this wave never took in
    with pytest.raises(CheckFailedError, match="1 request ids that are no request of this wave"):
        gathering.build_package(wave.rt, "W", "access")
    assert wave.started == []
