"""A running Airflow for the tests that need more than ``dag.test()``: the scheduler, dag-processor,
triggerer and api-server as ``make demo`` starts them, in their own home and metadata DB.

``dag.test()`` writes no audit log, runs no scheduler, triggerer or API: whatever depends on
those (the REST trigger's audit row, the deadline callback, a deferral resumed by the
triggerer) is tested against this stack. It shares the test session's demo world (the
connections in the environment), so a run it executes reads and writes the same platform DB,
object store, partner simulators and ledger as the ``dag.test()`` runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from include.demo.airflow_env import DEMO_PASSWORD, DEMO_USER, metadata_connection, write_passwords_file
from include.demo.launcher import ProcessGroup, start_airflow
from include.dsr.cli.airflow_api import AirflowApi
from tests.e2e.api_server import free_port

#: Seconds the stack gets to start (four Airflow processes on a two-core machine).
START_TIMEOUT = 300
RIGHT_DAGS = [
    f"dsr_{right}" for right in ("access", "portability", "erasure", "restriction", "rectification", "objection")
]


@dataclass
class Stack:
    home: Path
    url: str
    env: dict[str, str]
    api: AirflowApi
    group: ProcessGroup
    started_in: float  # seconds from the metadata DB migration until the API answered

    @property
    def metadata_db(self) -> Path:
        return self.home / "airflow.db"

    @property
    def metadata_url(self) -> str:
        return self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]

    @property
    def process_logs(self) -> Path:
        return self.group.log_dir

    @property
    def task_logs(self) -> Path:
        return self.home / "logs"

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> dict:
        """Poll the API until the run has finished; returns the run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api.get_run(dag_id, run_id)
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(1)
        raise TimeoutError(f"run {run_id} of {dag_id} not finished after {timeout}s")


@contextmanager
def running_stack(home: Path, extra_env: dict[str, str] | None = None, restart_exited: bool = False) -> Iterator[Stack]:
    """Migrate a fresh metadata DB in ``home`` and run the four Airflow components until exit.

    :param extra_env: on top of the session's environment, e.g. a connection through a fault proxy
    :param restart_exited: start a component that exited again, as ``make demo`` does (on a
        loaded machine the SQLite metadata DB's "database is locked" ends a scheduler's loop);
        not for tests that kill components themselves
    """
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW_CONN_DSR_AIRFLOW_METADATA": metadata_connection(home),
        **(extra_env or {}),
    }
    with _started(home, env, port) as stack:
        if not restart_exited:
            yield stack
            return
        with _restarting(stack.group):
            yield stack


@contextmanager
def _restarting(group: ProcessGroup) -> Iterator[None]:
    """Every 2 s, start again an Airflow component of ``group`` that exited (the launcher's rule)."""
    import threading

    from include.demo.launcher import restartable_components

    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(2):
            group.supervise(restartable_components())

    watcher = threading.Thread(target=watch, name="stack-restarter", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join(timeout=30)


@contextmanager
def running_celery_stack(home: Path, postgres_url: str, broker_db: int = 7) -> Iterator[Stack]:
    """``make stack`` in ``home``: CeleryExecutor with two workers, a throw-away metadata database
    on the PostgreSQL server of ``postgres_url`` and the Redis database ``broker_db`` (flushed)."""
    import redis

    from include.demo import celery_stack

    port = free_port()
    metadata_url = f"{postgres_url.rsplit('/', 1)[0]}/dsr_airflow_e2e_{os.getpid()}"
    broker_url = f"redis://127.0.0.1:6379/{broker_db}"
    redis.Redis.from_url(broker_url).flushdb()
    celery_stack.drop_database(metadata_url)
    celery_stack.ensure_database(metadata_url)
    env = celery_stack.stack_environment(home, metadata_url, broker_url, port, base=dict(os.environ))
    env.update(
        {
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            # A task whose worker was killed is found by its missed heartbeats in seconds, not minutes.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "DSR_TASK_RETRY_DELAY_SECONDS": "3",
        }
    )
    try:
        with _started(home, env, port, workers=celery_stack.workers(base_log_port=free_port())) as stack:
            yield stack
    finally:
        celery_stack.drop_database(metadata_url)


@contextmanager
def _started(home: Path, env: dict[str, str], port: int, workers: tuple = ()) -> Iterator[Stack]:
    started = time.monotonic()
    home.mkdir(parents=True, exist_ok=True)
    write_passwords_file(home)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    group = ProcessGroup(log_dir=home / "process-logs")
    try:
        url = start_airflow(group, env, port, timeout=START_TIMEOUT, workers=workers)
        api = AirflowApi(url, username=DEMO_USER, password=DEMO_PASSWORD, timeout=30)
        for dag_id in RIGHT_DAGS:  # a test triggers at once: the dag-processor must have parsed them
            api.wait_for_dag(dag_id, timeout=START_TIMEOUT)
        yield Stack(home, url, env, api, group, time.monotonic() - started)
    finally:
        group.stop()
