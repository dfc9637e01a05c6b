"""One right DAG run on a running Airflow (the CeleryExecutor stack) for a benchmark's own world.

``dag.test()`` runs a DAG's tasks one after another in the benchmark's process; a deployment runs
them on workers, the independent ones side by side (a wave's gathers). :class:`BenchStack` starts
the stack of ``make stack`` (scheduler, dag-processor, triggerer, api-server, two Celery workers
of :mod:`include.demo.celery_stack`) on a metadata DB and broker of its own, in the benchmark's
environment, so its tasks reach the benchmark's platform DB, ledger, S3 server and partners.
:meth:`BenchStack.run` triggers a run over REST and times it from the trigger to the run's end.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from pathlib import Path

from bench_e2e import BenchApi

from include.demo import celery_stack
from include.demo.airflow_env import DEMO_PASSWORD, DEMO_USER, write_passwords_file
from include.demo.launcher import ProcessGroup, _airflow, start_airflow
from include.dsr.cli.airflow_api import ApiNotFoundError

POLL_SECONDS = 1.0
FINISHED = ("success", "failed")


def _stack_metadata_url(base_url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(base_url).set(database=name).render_as_string(False)


class BenchStack:
    """``with BenchStack(home, postgres_url) as stack: stack.run(...)``; stops every process on exit.

    :param home: AIRFLOW_HOME of the stack (logs, passwords file)
    :param postgres_url: the server whose database ``dsr_bench_stack`` (dropped first) is the metadata DB
    """

    def __init__(self, home: Path, postgres_url: str, port: int, broker_url: str = "redis://127.0.0.1:6379/5"):
        self.home = home
        self.port = port
        self.metadata_url = _stack_metadata_url(postgres_url, "dsr_bench_stack")
        self.broker_url = broker_url
        self.group = ProcessGroup(log_dir=home / "process-logs")
        self.api: BenchApi | None = None
        self.up_s = 0.0

    def __enter__(self) -> BenchStack:
        import subprocess

        import redis

        started = time.perf_counter()
        celery_stack.drop_database(self.metadata_url)
        celery_stack.ensure_database(self.metadata_url)
        redis.Redis.from_url(self.broker_url).flushdb()  # no task of an earlier stack left queued
        env = celery_stack.stack_environment(
            home=self.home, metadata_url=self.metadata_url, broker_url=self.broker_url, port=self.port, base=os.environ
        )
        write_passwords_file(self.home)
        subprocess.run(_airflow("db", "migrate"), env=env, check=True, stdout=subprocess.DEVNULL)
        try:
            url = start_airflow(self.group, env, self.port, workers=celery_stack.workers())
            self.api = BenchApi(url, DEMO_USER, DEMO_PASSWORD, timeout=60)
        except BaseException:
            self.group.stop()
            raise
        self.up_s = round(time.perf_counter() - started, 1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.group.stop()

    def pids(self) -> dict[str, int]:
        return {f"stack {name}": proc.pid for name, proc in self.group.children}

    def _wait_for_dag(self, dag_id: str, timeout: float = 300) -> None:
        assert self.api is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.api.get(f"/api/v2/dags/{dag_id}")
                return
            except ApiNotFoundError:  # not parsed yet
                if time.monotonic() > deadline:
                    raise
            time.sleep(1)

    def ready(self, dag_id: str) -> None:
        """Wait until the dag-processor has parsed ``dag_id``, and unpause it."""
        assert self.api is not None
        self._wait_for_dag(dag_id)
        self.api.unpause(dag_id)

    def run(self, dag_id: str, conf: dict, mark_success: tuple[str, ...] = (), timeout: float = 3600) -> dict:
        """Trigger ``dag_id`` (made :meth:`ready` first) with ``conf`` and wait for its end. A task of
        ``mark_success`` that waits for a human is marked done, as ``dag.test(mark_success_pattern=...)`` does.

        :returns: wall (trigger to the run's end, seen by polling every second), the run's own
            start-to-end, state, failed tasks, seconds per task (mapped instances summed), and each
            task's (first start, last end)
        """
        api = self.api
        assert api is not None
        started = time.perf_counter()
        run_id = api.post_run(dag_id, conf)
        quoted = urllib.parse.quote(run_id, safe="")
        while True:
            run = api.run(dag_id, run_id)
            if run["state"] in FINISHED:
                break
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{dag_id} {run_id} not finished in {timeout:.0f}s")
            for ti in api.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances", state=["awaiting_input"])[
                "task_instances"
            ]:
                if ti["task_id"] in mark_success:
                    path = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{ti['task_id']}"
                    if ti["map_index"] >= 0:
                        path += f"/{ti['map_index']}"
                    api._request("PATCH", path, {"new_state": "success"})
            time.sleep(POLL_SECONDS)
        wall = time.perf_counter() - started
        tis = api.task_instances(dag_id, run_id)
        return {
            "wall_s": round(wall, 2),
            "run_s": round(_seconds(run["start_date"], run["end_date"]), 2),
            "state": run["state"],
            "failed_tasks": sorted(ti["task_id"] for ti in tis if ti["state"] == "failed"),
            "task_s": _task_seconds(tis),
            "spans": _task_spans(tis),
        }


def _seconds(start: str | None, end: str | None) -> float:
    from datetime import datetime

    if not start or not end:
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def _task_seconds(tis: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for ti in tis:
        out[ti["task_id"]] = round(out.get(ti["task_id"], 0.0) + _seconds(ti["start_date"], ti["end_date"]), 2)
    return out


def _task_spans(tis: list[dict]) -> dict[str, tuple]:
    """task id -> (first start, last end) as datetimes: a mapped task's instances as one stage."""
    from datetime import datetime

    spans: dict[str, tuple] = {}
    for ti in tis:
        if not ti["start_date"] or not ti["end_date"]:
            continue
        start, end = datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"])
        first, last = spans.get(ti["task_id"], (start, end))
        spans[ti["task_id"]] = (min(first, start), max(last, end))
    return spans
