"""A wave's packages written side by side: threads, or forked processes with their own S3 clients,
in order, a failure stopping the rest (against the session's real S3 server)."""

from __future__ import annotations

import os
import uuid
from types import SimpleNamespace

import pytest

from include import settings
from include.dsr.core.errors import TerminalError
from include.dsr.rights import package_writers
from include.dsr.rights.package_writers import write_packages


@pytest.fixture
def bucket(s3_factory) -> str:
    name = f"package-writers-{uuid.uuid4().hex[:10]}"
    s3_factory().create_bucket(Bucket=name)
    return name


@pytest.fixture
def forking(monkeypatch):
    """Two processes from 10 packages up (the defaults: up to 4, from 200)."""
    monkeypatch.setattr(package_writers, "PROCESSES_FROM", 10)
    monkeypatch.setattr(settings, "PACKAGE_PROCESSES", 2)


def _writer(rt, bucket: str, fails_at: str | None = None):
    """A stand-in for one package: one object written with the runtime's client, who wrote it."""

    def write(rid: str) -> dict:
        if rid == fails_at:
            raise TerminalError(f"request {rid}: staged unit payflow names a system the data map does not declare")
        rt.s3.put_object(Bucket=bucket, Key=f"packages/{rid}", Body=rid.encode())
        return {"rid": rid, "pid": os.getpid(), "client": id(rt.s3)}

    return write


def _written_keys(s3, bucket: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="packages/")
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_a_large_wave_is_written_by_forked_processes_in_order_each_with_its_own_client(s3_factory, bucket, forking):
    parent_client = s3_factory()
    rt = SimpleNamespace(s3=parent_client)
    ids = [f"W-{i:03d}" for i in range(80)]
    written = write_packages(_writer(rt, bucket), ids, rt, s3_factory)
    packages = list(written.packages)
    assert written.processes == 2
    assert [p["rid"] for p in packages] == ids  # in the order of the wave
    pids = {p["pid"] for p in packages}
    assert len(pids) == 2
    assert os.getpid() not in pids
    assert id(parent_client) not in {p["client"] for p in packages}  # each process made its own
    assert rt.s3 is parent_client  # this process's runtime keeps its client
    assert _written_keys(parent_client, bucket) == [f"packages/{rid}" for rid in ids]


@pytest.mark.parametrize(
    ("count", "with_maker"),
    [
        pytest.param(5, True, id="a wave below the threshold"),
        pytest.param(80, False, id="no maker of new clients (a hook-only connection, tests)"),
    ],
)
def test_otherwise_this_process_s_threads_write_them(s3_factory, bucket, forking, count, with_maker):
    rt = SimpleNamespace(s3=s3_factory())
    ids = [f"T-{i:03d}" for i in range(count)]
    written = write_packages(_writer(rt, bucket), ids, rt, s3_factory if with_maker else None)
    packages = list(written.packages)
    assert written.processes == 1
    assert [p["rid"] for p in packages] == ids
    assert {p["pid"] for p in packages} == {os.getpid()}


def test_a_failure_in_a_forked_process_reaches_the_caller_with_its_reason_and_stops_the_rest(
    s3_factory, bucket, forking
):
    s3 = s3_factory()
    rt = SimpleNamespace(s3=s3)
    ids = [f"F-{i:03d}" for i in range(400)]
    written = write_packages(_writer(rt, bucket, fails_at="F-030"), ids, rt, s3_factory)
    with pytest.raises(TerminalError, match="F-030: staged unit payflow"):
        for _ in written.packages:
            pass
    written.cancel()
    left = _written_keys(s3, bucket)
    assert "packages/F-030" not in left
    assert len(left) < 200, "hand-outs queued behind the failure were not cancelled"
