"""The demo launcher starts a dying Airflow component again, within a limit, with real processes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from include.demo import launcher
from include.demo.launcher import ProcessGroup

EXIT_AT_ONCE = [sys.executable, "-c", "import sys; sys.exit(3)"]
STAY_UP = [sys.executable, "-c", "import time; time.sleep(60)"]


def _wait_exited(group: ProcessGroup, name: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.poll() is not None for n, p in group.children if n == name):
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} did not exit")


@pytest.fixture
def group(tmp_path):
    group = ProcessGroup(log_dir=tmp_path)
    yield group
    group.stop()


def test_an_exited_component_is_started_again_and_the_others_are_left_alone(group, tmp_path):
    marker = tmp_path / "crashed-once"
    # Exits 3 on its first start (as the triggerer on "database is locked"), stays up on the second.
    crash_once = [
        sys.executable,
        "-c",
        f"import pathlib, sys, time; m = pathlib.Path({str(marker)!r})\n"
        "if not m.exists(): m.touch(); sys.exit(3)\ntime.sleep(60)",
    ]
    group.start("triggerer", crash_once, {})
    steady = group.start("scheduler", STAY_UP, {})
    _wait_exited(group, "triggerer")
    assert group.supervise({"triggerer", "scheduler"}) == ["triggerer"]
    time.sleep(0.5)
    assert group.supervise({"triggerer", "scheduler"}) == []  # the new triggerer stays up
    triggerers = [p for n, p in group.children if n == "triggerer"]
    assert len(triggerers) == 1  # the dead one is dropped
    assert triggerers[0].poll() is None
    assert [p for n, p in group.children if n == "scheduler"] == [steady]
    assert steady.poll() is None
    assert len(group.restarts["triggerer"]) == 1
    assert "scheduler" not in group.restarts


def test_a_component_that_keeps_dying_stops_the_demo_after_the_limit(group, monkeypatch):
    monkeypatch.setattr(launcher, "RESTART_LIMIT", 3)
    group.start("dag-processor", EXIT_AT_ONCE, {})
    for _ in range(3):
        _wait_exited(group, "dag-processor")
        assert group.supervise({"dag-processor"}) == ["dag-processor"]
    _wait_exited(group, "dag-processor")
    with pytest.raises(RuntimeError, match=r"dag-processor exited with code 3 after 3 restarts in 600s"):
        group.supervise({"dag-processor"})


def test_restarts_older_than_the_window_do_not_count(group, monkeypatch):
    monkeypatch.setattr(launcher, "RESTART_LIMIT", 1)
    group.start("api-server", EXIT_AT_ONCE, {})
    _wait_exited(group, "api-server")
    assert group.supervise({"api-server"}) == ["api-server"]
    group.restarts["api-server"] = [time.monotonic() - launcher.RESTART_WINDOW_SECONDS - 1]
    _wait_exited(group, "api-server")
    assert group.supervise({"api-server"}) == ["api-server"]


def test_a_service_that_exits_is_not_restarted(group):
    """The S3 server and the simulators keep their state in memory: restarting one would hide a lost world."""
    group.start("s3-server", EXIT_AT_ONCE, {})
    _wait_exited(group, "s3-server")
    with pytest.raises(RuntimeError, match=r"s3-server exited with code 3; see .*s3-server\.log"):
        group.supervise({"scheduler"})
    assert "s3-server" not in group.restarts


def test_a_restart_ends_what_the_dead_component_left_running(group, tmp_path):
    """A component's children (task runners, a log server) outlive it and could hold its port."""
    pid_file = tmp_path / "orphan.pid"
    leaves_a_child = [
        sys.executable,
        "-c",
        "import pathlib, subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid)); sys.exit(3)",
    ]
    group.start("scheduler", leaves_a_child, {})
    _wait_exited(group, "scheduler")
    orphan = int(pid_file.read_text())
    assert _alive(orphan)
    group.supervise({"scheduler"})
    deadline = time.monotonic() + 10
    while _alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(orphan)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


def test_the_launcher_restarts_airflow_and_workers_never_the_services():
    from include.demo.celery_stack import workers

    names = launcher.restartable_components(workers())
    assert {"scheduler", "dag-processor", "triggerer", "api-server"} <= names
    assert {w.name for w in workers()} <= names
    assert not names & {"s3-server", "smtp-sink", "partner-simulators"}
    assert launcher.restartable_components() == set(launcher.AIRFLOW_COMPONENTS)
