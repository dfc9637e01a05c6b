"""A wave's packages: queued at once, recorded a chunk at a time in order, and one failure
stops the packages not yet started (the task fails; its retry rebuilds every package)."""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from types import SimpleNamespace

import pytest

from include.dsr.connectors import staging
from include.dsr.rights import gathering, waves


@pytest.fixture
def wave(monkeypatch):
    ids = [f"W-{i:04d}" for i in range(400)]
    written: list[str] = []
    recorded: list[list[str]] = []
    lock = threading.Lock()

    class Ledger:
        def get_requests(self, wanted):
            return dict.fromkeys(wanted)

        def batch(self):
            recorded.append([])
            return nullcontext()

    def write(rt, rid, right, row, staging=None):
        with lock:
            written.append(rid)  # started
        if rid == rt.fails_at:
            raise OSError("object store unreachable")
        if rt.fails_at and rid > rt.fails_at:
            time.sleep(0.5)  # still writing when the failure is seen
        return SimpleNamespace(request_id=rid)

    def record(rt, rid, package, receipt=None):
        assert package.request_id == rid
        recorded[-1].append(rid)
        return {"records": 1}

    monkeypatch.setattr(gathering, "is_wave_batch", lambda rt, batch_id: True)
    monkeypatch.setattr(
        gathering, "delivered_subjects", lambda rt, batch_id: [SimpleNamespace(request_id=i) for i in ids]
    )
    monkeypatch.setattr(gathering, "write_request_package", write)
    monkeypatch.setattr(gathering, "record_package", record)
    monkeypatch.setattr(waves, "confs", lambda rt, conf, right: {})
    monkeypatch.setattr(staging, "StagedBatch", lambda _: SimpleNamespace(slice=lambda rid: rid))
    rt = SimpleNamespace(ledger=Ledger(), staging=lambda batch_id: None, fails_at=None)
    return SimpleNamespace(rt=rt, ids=ids, written=written, recorded=recorded)


def test_every_package_is_recorded_once_in_chunks_in_order(wave):
    result = gathering.build_package(wave.rt, "W", "access")
    assert result == {"request_id": "W", "packages": 400, "records": 400}
    assert [rid for chunk in wave.recorded for rid in chunk] == wave.ids
    assert [len(chunk) for chunk in wave.recorded] == [gathering.CLOSE_CHUNK] * (400 // gathering.CLOSE_CHUNK)
    assert sorted(wave.written) == wave.ids


def test_a_failed_package_stops_the_wave_and_records_only_the_chunks_before_it(wave):
    wave.rt.fails_at = "W-0150"
    with pytest.raises(OSError, match="unreachable"):
        gathering.build_package(wave.rt, "W", "access")
    assert [rid for chunk in wave.recorded for rid in chunk] == wave.ids[: gathering.CLOSE_CHUNK]
    # W-0000..W-0150 start; of the slow ones behind, at most one per thread before the cancel
    assert len(wave.written) <= 151 + gathering.PACKAGE_THREADS, "queued packages were not cancelled"
