"""``make demo`` / ``make down``: run the whole product on embedded defaults.

``up`` initialises the embedded Airflow (SQLite metadata DB in ``.airflow/``), starts the
demo services (S3-compatible server, partner simulators), builds the demo world, starts
the Airflow scheduler, dag-processor, api-server and triggerer, waits until the API
answers, prints the URL and login, runs the demo requests and then waits, starting again an
Airflow component that exits (at most ``RESTART_LIMIT`` times in ``RESTART_WINDOW_SECONDS``). Ctrl-C, SIGTERM
or ``down`` stops every process it started (whole process groups) and removes the pid file.
Running ``up`` while an earlier launcher is alive stops that one first.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from include import settings
from include.demo.airflow_env import (
    AIRFLOW_HOME,
    DEMO_PASSWORD,
    DEMO_USER,
    airflow_environment,
    write_passwords_file,
)
from include.demo.readiness import wait_for_http, wait_for_port

log = logging.getLogger("demo")

PID_FILE = settings.DEMO_DIR / "launcher.pid"
LOG_DIR = AIRFLOW_HOME / "process-logs"
AIRFLOW_COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
STOP_GRACE_SECONDS = 20
# A component that dies while the demo runs is started again (its state is in the metadata DB),
# at most this many times within the window; one more exit stops the demo with the reason.
RESTART_LIMIT, RESTART_WINDOW_SECONDS = 5, 600


class ProcessGroup:
    """Children started in their own sessions so a stop reaches their grandchildren too.

    :param log_dir: where each child's output goes (``<name>.log``)
    """

    def __init__(self, log_dir: Path = LOG_DIR) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.restarts: dict[str, list[float]] = {}  # name -> monotonic times of its restarts
        self._logs: dict[str, IO[bytes]] = {}  # name -> the open log file of its latest process

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._close_log(name)
        self._logs[name] = out
        self.children.append((name, proc))
        self.commands[name] = (cmd, env)
        log.info("started %s (pid %s, log %s)", name, proc.pid, self.log_dir / f"{name}.log")
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a child's whole process group (a crash drill: SIGKILL leaves no time to clean up)."""
        for child_name, proc in self.children:
            if child_name == name and proc.poll() is None:
                _signal_group(proc.pid, sig)
                proc.wait(timeout=STOP_GRACE_SECONDS)
                log.info("killed %s (signal %s)", name, sig)

    def restart(self, name: str) -> subprocess.Popen:
        """Start a killed child again with its command and environment."""
        self.children = [(n, p) for n, p in self.children if n != name or p.poll() is None]
        cmd, env = self.commands[name]
        return self.start(name, cmd, env)

    def check_alive(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {self.log_dir / (name + '.log')}")

    def supervise(self, restartable: set[str]) -> list[str]:
        """Start again each ``restartable`` child that exited; return their names.

        :raises RuntimeError: a child outside ``restartable`` exited, or one exited more than
            :data:`RESTART_LIMIT` times within :data:`RESTART_WINDOW_SECONDS` (it keeps dying:
            restarting it again would hide the cause)
        """
        restarted = []
        for name, proc in list(self.children):
            if proc.poll() is None:
                continue
            now = time.monotonic()
            recent = [t for t in self.restarts.get(name, []) if now - t < RESTART_WINDOW_SECONDS]
            where = self.log_dir / f"{name}.log"
            if name not in restartable or len(recent) >= RESTART_LIMIT:
                why = "" if name not in restartable else f" after {len(recent)} restarts in {RESTART_WINDOW_SECONDS}s"
                raise RuntimeError(f"{name} exited with code {proc.returncode}{why}; see {where}")
            self.restarts[name] = [*recent, now]
            # Its own children (task runners, uvicorn or log-server processes) may outlive it and
            # hold its ports: end its whole process group before starting it again.
            _signal_group(proc.pid, signal.SIGKILL)
            log.warning(
                "%s exited with code %s; starting it again (restart %s of %s in %ss; see %s)",
                name,
                proc.returncode,
                len(recent) + 1,
                RESTART_LIMIT,
                RESTART_WINDOW_SECONDS,
                where,
            )
            self.restart(name)
            restarted.append(name)
        return restarted

    def stop(self) -> None:
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, proc in reversed(self.children):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %ss, killing it", name, STOP_GRACE_SECONDS)
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            log.info("stopped %s", name)
        self.children.clear()
        for name in list(self._logs):
            self._close_log(name)

    def _close_log(self, name: str) -> None:
        out = self._logs.pop(name, None)
        if out is not None:
            out.close()


def restartable_components(workers: tuple = ()) -> set[str]:
    """What the launcher starts again when it exits: Airflow's components and the Celery workers
    (their state is in the metadata DB), never the demo services (theirs is in memory)."""
    return {*AIRFLOW_COMPONENTS, *(w.name for w in workers)}


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _airflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "airflow", *args]


def start_airflow(
    group: ProcessGroup, env: dict[str, str], port: int, timeout: float = 180, workers: tuple = ()
) -> str:
    """Start the scheduler, dag-processor, triggerer and api-server (and the Celery ``workers`` of
    :mod:`include.demo.celery_stack`); return the API URL once it answers."""
    for component in AIRFLOW_COMPONENTS:
        args = ("api-server", "--port", str(port)) if component == "api-server" else (component,)
        group.start(component, _airflow(*args), env)
    for worker in workers:
        # Each worker serves its task logs on a port of its own (two on one host would clash).
        worker_env = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker.log_port)}
        group.start(worker.name, _airflow(*worker.command()), worker_env)
    url = f"http://localhost:{port}"
    wait_for_http(f"{url}/api/v2/monitor/health", timeout=timeout, alive=group.check_alive)
    return url


def stop_previous() -> bool:
    """Stop a launcher recorded in the pid file; True if one was running."""
    if not PID_FILE.exists():
        return False
    try:
        pid = int(PID_FILE.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (ValueError, ProcessLookupError):
        PID_FILE.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + STOP_GRACE_SECONDS + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    return True


def up(run_demo_requests: bool = True, hold: bool = True, celery: bool = False) -> int:
    """Run the demo; ``celery`` runs it on the CeleryExecutor stack (``make stack``) instead."""
    if stop_previous():
        log.info("stopped the previous demo first")
    settings.DEMO_DIR.mkdir(parents=True, exist_ok=True)
    PID_FILE.write_text(str(os.getpid()))
    workers: tuple = ()
    if celery:
        from include.demo import celery_stack

        celery_stack.ensure_database(celery_stack.METADATA_URL)
        env, home, workers = celery_stack.stack_environment(), celery_stack.STACK_HOME, celery_stack.workers()
        metadata_db = celery_stack.display_url(celery_stack.METADATA_URL)
    else:
        env, home, metadata_db = airflow_environment(), AIRFLOW_HOME, str(AIRFLOW_HOME / "airflow.db")
    group = ProcessGroup(log_dir=home / "process-logs")
    stopping = False

    def _on_signal(signum, _frame):
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        started = time.monotonic()
        write_passwords_file(home)
        log.info("migrating the Airflow metadata DB (%s)", metadata_db)
        subprocess.run(_airflow("db", "migrate"), env=env, check=True, stdout=subprocess.DEVNULL)
        group.start("s3-server", [sys.executable, "-m", "include.demo.services", "s3"], env)
        wait_for_port("127.0.0.1", settings.S3_PORT, timeout=60, alive=group.check_alive)
        group.start("smtp-sink", [sys.executable, "-m", "include.demo.services", "smtp"], env)
        wait_for_port("127.0.0.1", settings.SMTP_PORT, timeout=30, alive=group.check_alive)
        log.info("building the demo world (%s subjects)", settings.DEMO_SUBJECTS)
        subprocess.run([sys.executable, "-m", "include.demo.world", "build"], env=env, check=True)
        group.start("partner-simulators", [sys.executable, "-m", "include.demo.services", "partners"], env)
        wait_for_port("127.0.0.1", settings.PARTNER_BASE_PORT, timeout=60, alive=group.check_alive)
        url = start_airflow(group, env, settings.AIRFLOW_PORT, workers=workers)
        executor = "CeleryExecutor, 2 workers" if celery else "LocalExecutor"
        print(
            f"\nFabconnect DSR is up ({executor}, {time.monotonic() - started:.0f} s): {url}"
            f"  (login {DEMO_USER} / {DEMO_PASSWORD})",
            flush=True,
        )
        print(f"Mail sent by the product lands in {settings.DEMO_DIR / 'mail'}/*.eml", flush=True)
        print("Stop with Ctrl-C or `make down`.\n", flush=True)
        if run_demo_requests:
            from include.demo.sample_requests import run_sample_requests

            run_sample_requests(url, DEMO_USER, DEMO_PASSWORD)
        # Airflow's components keep their state in the metadata DB, so one that dies (the SQLite
        # default's "database is locked" under a burst) is started again; the services hold theirs
        # in memory, so their exit stops the demo.
        while hold:
            group.supervise(restartable_components(workers))
            time.sleep(2)
        return 0
    except KeyboardInterrupt:
        print("\nstopping the demo ...", flush=True)
        return 0
    finally:
        group.stop()
        PID_FILE.unlink(missing_ok=True)


def down() -> int:
    if stop_previous():
        print("demo stopped")
    else:
        print("no demo running")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the Fabconnect DSR demo")
    parser.add_argument("command", choices=("up", "down"))
    parser.add_argument("--no-requests", action="store_true", help="do not submit the sample requests")
    parser.add_argument("--celery", action="store_true", help="CeleryExecutor, PostgreSQL metadata DB, Redis broker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.command == "down":
        return down()
    return up(run_demo_requests=not args.no_requests, celery=args.celery)


if __name__ == "__main__":
    raise SystemExit(main())
