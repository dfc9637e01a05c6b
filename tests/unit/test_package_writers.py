"""A wave's packages written side by side: threads, or forked processes with their own S3 clients,
in order, a failure stopping the rest (against the session's real S3 server)."""

from __future__ import annotations

import multiprocessing
import os
import signal
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
    written = write_packages(_writer(rt, bucket), ids, rt, lambda: s3_factory)
    packages = list(written.packages)
    written.close()
    assert written.processes == 2
    assert [p["rid"] for p in packages] == ids  # in the order of the wave
    pids = {p["pid"] for p in packages}
    assert len(pids) == 2
    assert os.getpid() not in pids
    assert id(parent_client) not in {p["client"] for p in packages}  # each process made its own
    assert rt.s3 is parent_client  # this process's runtime keeps its client
    assert _written_keys(parent_client, bucket) == [f"packages/{rid}" for rid in ids]


def _wave_in_a_task_process_of_a_daemon(s3_factory, bucket: str, ids: list[str], answer) -> None:
    """As on the CeleryExecutor: a daemonic pool process whose task process (``os.fork()``-ed by
    Airflow's supervisor) writes a wave in forked processes."""
    os.setpgid(0, 0)  # one group with its task process, for the test to end both if stuck
    pid = os.fork()
    if pid == 0:  # the task's process
        code = 1
        try:
            rt = SimpleNamespace(s3=s3_factory())
            written = write_packages(_writer(rt, bucket), ids, rt, lambda: s3_factory)
            packages = list(written.packages)
            written.close()
            answer.put(
                (
                    written.processes,
                    [p["rid"] for p in packages],
                    len({p["pid"] for p in packages}),
                    multiprocessing.current_process().daemon,
                )
            )
            code = 0
        except BaseException as exc:
            answer.put(f"{type(exc).__name__}: {exc}")
        finally:
            answer.close()
            answer.join_thread()
            os._exit(code)
    os.waitpid(pid, 0)


def test_a_task_process_forked_from_a_daemonic_celery_pool_process_still_forks_its_writers(s3_factory, bucket, forking):
    ctx = multiprocessing.get_context("fork")
    answer = ctx.Queue()
    ids = [f"C-{i:03d}" for i in range(40)]
    pool_process = ctx.Process(
        target=_wave_in_a_task_process_of_a_daemon, args=(s3_factory, bucket, ids, answer), daemon=True
    )
    pool_process.start()
    try:
        got = answer.get(timeout=60)
    finally:
        pool_process.join(30)
        if pool_process.is_alive():  # stuck: it and its task process go (one process group)
            os.killpg(pool_process.pid, signal.SIGKILL)
            pool_process.join(5)
    assert got == (2, ids, 2, True), got  # True: the task process is daemonic again afterwards
    assert _written_keys(s3_factory(), bucket) == [f"packages/{rid}" for rid in ids]


@pytest.mark.parametrize(
    ("count", "with_maker"),
    [
        pytest.param(5, True, id="a wave below the threshold"),
        pytest.param(80, False, id="no maker of new clients (a connection only the hook can serve)"),
    ],
)
def test_otherwise_this_process_s_threads_write_them(s3_factory, bucket, forking, count, with_maker):
    rt = SimpleNamespace(s3=s3_factory())
    ids = [f"T-{i:03d}" for i in range(count)]
    asked: list[str] = []
    maker = (lambda: asked.append("maker") or s3_factory) if with_maker else (lambda: asked.append("maker"))
    written = write_packages(_writer(rt, bucket), ids, rt, maker)
    packages = list(written.packages)
    assert written.processes == 1
    assert [p["rid"] for p in packages] == ids
    assert {p["pid"] for p in packages} == {os.getpid()}
    assert asked == ([] if count < package_writers.PROCESSES_FROM else ["maker"])  # asked only to fork


def test_a_failure_in_a_forked_process_reaches_the_caller_with_its_reason_and_stops_the_rest(
    s3_factory, bucket, forking
):
    s3 = s3_factory()
    rt = SimpleNamespace(s3=s3)
    ids = [f"F-{i:03d}" for i in range(400)]
    written = write_packages(_writer(rt, bucket, fails_at="F-030"), ids, rt, lambda: s3_factory)
    with pytest.raises(TerminalError, match="F-030: staged unit payflow"):
        for _ in written.packages:
            pass
    written.close()
    left = _written_keys(s3, bucket)
    assert "packages/F-030" not in left
    assert len(left) < 200, "hand-outs queued behind the failure were not cancelled"


def test_a_forked_process_takes_a_term_signal_and_watches_the_task_s_process(s3_factory, forking):
    """Airflow's task process ignores TERM sent to a process other than the task's; a package
    process must stop on one, and end by itself if the task's process is killed."""
    import signal
    import threading

    rt = SimpleNamespace(s3=s3_factory())
    parent = os.getpid()

    def write(rid: str) -> dict:
        return {
            "term": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
            "watching": any(t.name == "parent-watch" for t in threading.enumerate()),
            "parent": os.getppid(),
        }

    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # as Airflow's task runner sets one
    try:
        written = write_packages(write, [f"S-{i}" for i in range(20)], rt, lambda: s3_factory)
        seen = list(written.packages)
        written.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert written.processes == 2
    assert all(p["term"] and p["watching"] and p["parent"] == parent for p in seen)


def test_a_forked_process_ends_when_the_task_s_process_is_gone(tmp_path):
    """The task's process killed (OOM, SIGKILL): its package processes do not wait for ever."""
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    script = f"""
import os, time
from include.dsr.rights.package_writers import _end_with_parent
parent = os.getpid()
if os.fork() == 0:
    open({str(pid_file)!r}, "w").write(str(os.getpid()))
    _end_with_parent(parent)  # returns only by exiting the process
    time.sleep(60)
else:
    time.sleep(0.5)
    os._exit(0)  # the parent goes without a word
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the orphaned package process is still running")
