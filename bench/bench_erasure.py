"""Erasure throughput on PostgreSQL: one subject at ~10k vs ~1M platform rows, then a wave of
10,000 erasures in the ~1M-row world, side by side with Fides erasing subjects one by one.

Every erasure runs the product's ``dsr_erasure`` DAG with ``dag.test()`` (the DAG's own tasks
in this process: intake, plan, platform, objects, partners, GX checks, close), against:

* the platform DB in a PostgreSQL schema (``bench_erase_small`` / ``bench_erase_large``, rebuilt
  on every run because an erasure consumes it) and the ledger in PostgreSQL (``bench_erase_ledger``);
* moto's S3 server over HTTP holding every object of the subjects erased (the world's other
  objects are not uploaded: ~130k PUTs would take longer than the benchmark), versioned;
* the partner simulators over HTTP and the S3 drop boxes, and the SMTP sink for notices.

Partner waits poll every ``DSR_PARTNER_POLL_SECONDS`` (2 s here, 30 s by default; a partner
gather first polls in the task for the default 3 s, ``DSR_PARTNER_INLINE_WAIT_SECONDS``) and the
manual partner's HITL task is marked done as ops would. Figures: wall time of each run
(``dag.test`` start to return) and of each task; subjects per minute of the wave; the
large/small ratio of the single erasure; then ``../shared/anchors/fides/run.sh`` with the same
subject count (a fresh Fides on its own PostgreSQL cluster, one erasure at a time over REST) and
the ratio of the rates. Writes ``bench/results/erasure.json``; exits non-zero only on errors.

Run (from the project root; ~15-30 min with the defaults)::

    .venv/bin/python bench/bench_erasure.py [--postgres-url URL] [--wave 10000] [--large 75000]
                                            [--small 720] [--singles 3] [--fides-runs 10] [--no-fides]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
FIDES = ROOT.parent / "shared" / "anchors" / "fides"
DEFAULT_URL = os.environ.get("DSR_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
LEDGER_SCHEMA = "bench_erase_ledger"
VERIFIED = {"method": "logged_in_session", "verified_at": "2026-11-30T09:00:00Z"}

# Like the test session: its own demo dir, ports (below the ephemeral range, so an outgoing
# connection never holds one first) and AIRFLOW_HOME before Airflow is imported.
_HOME = Path(tempfile.mkdtemp(prefix="dsr-bench-erasure-"))
os.environ.update(
    {
        "DSR_DEMO_DIR": str(_HOME / "demo"),
        "DSR_S3_PORT": os.environ.get("DSR_BENCH_BASE_PORT", "31400"),
        "DSR_PARTNER_BASE_PORT": str(int(os.environ.get("DSR_BENCH_BASE_PORT", "31400")) + 1),
        "DSR_SMTP_PORT": str(int(os.environ.get("DSR_BENCH_BASE_PORT", "31400")) + 9),
        "DSR_AIRFLOW_HOME": str(_HOME / "airflow"),
        "DSR_DEMO": "1",
        "GX_ANALYTICS_ENABLED": "False",
        "DSR_PARTNER_POLL_SECONDS": "2",
    }
)
from include.demo.airflow_env import airflow_environment  # noqa: E402

os.environ.update(airflow_environment(home=_HOME / "airflow"))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from include import constants, settings  # noqa: E402
from include.demo import app_schema  # noqa: E402
from include.demo.world import WorldPaths, _fresh_buckets, build_world, s3_client_for  # noqa: E402


def schema_url(base_url: str, schema: str) -> str:
    return make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)


def fresh_schema(base_url: str, schema: str) -> str:
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
    admin.dispose()
    return schema_url(base_url, schema)


def build(base_url: str, schema: str, subjects: int) -> tuple[WorldPaths, dict]:
    url = fresh_schema(base_url, schema)
    paths = WorldPaths(settings.DEMO_DIR, app_url=url)  # where the partner simulators look
    print(f"[{schema}] building a world of {subjects} subjects ...", flush=True)
    started = time.perf_counter()
    build_world(paths, subjects, settings.DEMO_SEED, None, progress=subjects >= 20000)
    engine = create_engine(url)
    with engine.begin() as conn:
        for t in app_schema.metadata.sorted_tables:
            conn.execute(text(f'ANALYZE "{t.name}"'))
        rows = {
            t.name: conn.execute(text(f'SELECT count(*) FROM "{t.name}"')).scalar_one()
            for t in app_schema.metadata.sorted_tables
        }
    engine.dispose()
    seconds = time.perf_counter() - started
    print(f"[{schema}] {sum(rows.values())} platform rows in {seconds:.0f}s", flush=True)
    return paths, {"schema": schema, "subjects": subjects, "platform_rows": sum(rows.values())}


def people(paths: WorldPaths, count: int, skip: int = 0) -> list[tuple[str, str]]:
    """(person key, email) of ordinary people with an email, in a fixed order (no hard cases)."""
    truth = sqlite3.connect(paths.ground_truth)
    rows = truth.execute(
        "SELECT person_key, email FROM people WHERE person_key LIKE 'P%' AND email IS NOT NULL "
        "AND kind IN ('customer', 'partner_user') ORDER BY person_key"
    ).fetchall()
    truth.close()
    chosen = rows[skip : skip + count]
    if len(chosen) < count:
        raise RuntimeError(f"the world has only {len(rows) - skip} people left to erase, {count} asked")
    return chosen


def upload_objects(s3, paths: WorldPaths, keys: list[str]) -> int:
    """Put every object the ground truth gives these people (two versions for revised specs)."""
    from concurrent.futures import ThreadPoolExecutor

    from include.demo.world import _is_revised

    truth = sqlite3.connect(paths.ground_truth)
    marks = ",".join("?" * len(keys))
    objects = [
        k
        for (k,) in truth.execute(
            f"SELECT row_id FROM owned_rows WHERE system = 'fabconnect_s3' AND person_key IN ({marks})", keys
        )
    ]
    truth.close()

    def put(key: str) -> None:
        if _is_revised(key):
            s3.put_object(Bucket=constants.PLATFORM_BUCKET, Key=key, Body=b"draft")
        s3.put_object(Bucket=constants.PLATFORM_BUCKET, Key=key, Body=b"final " + key.encode())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, objects))
    return len(objects)


class Services:
    """moto S3, the SMTP sink and the partner simulators for the world in the demo dir, each in a
    process of its own as in the demo (in this process they would compete with the DAG for the GIL)."""

    def __init__(self, paths: WorldPaths) -> None:
        from include.demo.launcher import ProcessGroup
        from include.demo.readiness import wait_for_port
        from include.demo.services import s3_endpoint

        self.group = ProcessGroup(_HOME / "service-logs")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        service = [sys.executable, "-m", "include.demo.services"]
        try:
            self.group.start("s3", [*service, "s3"], env)
            wait_for_port("127.0.0.1", settings.S3_PORT, timeout=60, alive=self.group.check_alive)
            self.group.start("smtp", [*service, "smtp"], env)
            wait_for_port("127.0.0.1", settings.SMTP_PORT, timeout=30, alive=self.group.check_alive)
            self.endpoint = s3_endpoint()
            self.s3 = s3_client_for(self.endpoint)
            _fresh_buckets(self.s3)
            self.group.start("partners", [*service, "partners"], env)
            wait_for_port("127.0.0.1", settings.PARTNER_BASE_PORT, timeout=60, alive=self.group.check_alive)
        except BaseException:
            self.group.stop()
            raise

    def stop(self) -> None:
        self.group.stop()

    def pids(self) -> dict[str, int]:
        """Service name -> pid (for CPU accounting)."""
        return {name: proc.pid for name, proc in self.group.children}


def point_airflow_at(paths: WorldPaths, ledger_url: str) -> None:
    """The product's connections for this world: platform DB and ledger in PostgreSQL."""
    for conn_id, url in ((constants.CONN_APP_DB, paths.app_url), (constants.CONN_LEDGER, ledger_url)):
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "extra": {"sqlalchemy_url": url}}
        )


def run_erasure(conf: dict, profile: str | None = None) -> dict:
    """One ``dsr_erasure`` run with ``dag.test()`` (see :func:`run_right_dag`)."""
    return run_right_dag("erasure", conf, profile)


def run_right_dag(right: str, conf: dict, profile: str | None = None, cpu_of: dict[str, int] | None = None) -> dict:
    """One ``dsr_<right>`` run with ``dag.test()``: wall, state, per-task seconds (mapped tasks summed).

    :param cpu_of: group name -> pid of the services whose CPU seconds are reported beside this
        process's (and PostgreSQL's), for the whole run and per task
    """
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.execution_time.supervisor import in_process_api_server
    from cpu_usage import CpuUsage

    from include.dsr.orchestration.preload import modules_to_preload, preload, warm_s3_model
    from tests.e2e.dag_test_fix import deadline_pruning_fix

    # As on a running Airflow, before the clock starts: a worker loads the heavy modules and the S3
    # model when it starts (config/airflow_local_settings.py), and the api-server is up (dag.test()
    # stands one in in this process, built on first use: 5 s of FastAPI routes and a DagBag).
    preload(modules_to_preload(os.environ))
    warm_s3_model()
    assert in_process_api_server().app is not None  # built now, not in the first task
    bag = DagBag(dag_folder=str(ROOT / "dags" / f"dsr_{right}.py"))
    dag = bag.get_dag(f"dsr_{right}")
    profiler = None
    if profile:  # dag.test runs every task in this process: one profile covers them all
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    with deadline_pruning_fix(), CpuUsage(cpu_of) as cpu:
        run = dag.test(run_conf=conf, mark_success_pattern="confirm_identity|confirm_manual_partner")
    wall = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    tasks: dict[str, float] = {}
    mapped: dict[str, float] = {}  # "task_id[label]" -> seconds of each mapped instance
    spans: dict[str, tuple] = {}  # task id -> (first start, last end): a mapped task's instances as one stage
    for ti in run.get_task_instances():
        if ti.start_date and ti.end_date:
            tasks[ti.task_id] = round(tasks.get(ti.task_id, 0.0) + (ti.end_date - ti.start_date).total_seconds(), 2)
            if ti.map_index >= 0:
                label = f"{ti.task_id}[{ti.rendered_map_index or ti.map_index}]"
                mapped[label] = round((ti.end_date - ti.start_date).total_seconds(), 2)
            first, last = spans.get(ti.task_id, (ti.start_date, ti.end_date))
            spans[ti.task_id] = (min(first, ti.start_date), max(last, ti.end_date))
    failed = sorted(ti.task_id for ti in run.get_task_instances() if ti.state == "failed")
    stages = {task_id: span for task_id, span in spans.items() if tasks[task_id] >= 1}
    return {
        "wall_s": round(wall, 2),
        "state": str(run.state),
        "failed_tasks": failed,
        "task_s": tasks,
        "mapped_task_s": mapped,
        "cpu": cpu.summary(stages),
    }


def closed_counts(ledger_url: str, prefix: str) -> dict[str, int]:
    """Requests per ledger status among this benchmark's (ids starting with ``prefix``)."""
    from bench_e2e import ledger_status_counts

    return ledger_status_counts(ledger_url, prefix)


def singles(base_url: str, schema: str, subjects: int, count: int, ledger_url: str) -> dict:
    paths, facts = build(base_url, schema, subjects)
    point_airflow_at(paths, ledger_url)
    services = Services(paths)
    try:
        chosen = people(paths, count + 1)
        facts["objects"] = upload_objects(services.s3, paths, [k for k, _ in chosen])
        runs = []
        for i, (_, email) in enumerate(chosen):
            conf = {"request_id": f"BENCH-ONE-{schema}-{i}", "subject": {"email": email}, "verification": VERIFIED}
            result = run_erasure(conf)
            print(f"[{schema}] single erasure {i}{' (warm-up)' if i == 0 else ''}: {result['wall_s']}s", flush=True)
            runs.append(result)
        return {**facts, "runs": runs[1:], "warmup": runs[0], "paths": paths, "services": services}
    except BaseException:
        services.stop()
        raise


def wave(paths: WorldPaths, services: Services, size: int, ledger_url: str, skip: int, profile=None) -> dict:
    chosen = people(paths, size, skip=skip)
    started = time.perf_counter()
    objects = upload_objects(services.s3, paths, [k for k, _ in chosen])
    print(f"[wave] uploaded {objects} objects of the {size} subjects in {time.perf_counter() - started:.0f}s")
    wave_id = f"BENCH-WAVE-{int(time.time())}"
    body = "\n".join(
        json.dumps({"request_id": f"{wave_id}-{i:05d}", "subject": {"email": email}, "verification": VERIFIED})
        for i, (_, email) in enumerate(chosen)
    )
    key = f"_waves/{wave_id}.jsonl"
    services.s3.put_object(Bucket=constants.EXPORTS_BUCKET, Key=key, Body=body.encode())
    print(f"[wave] {size} erasures as one run ...", flush=True)
    result = run_erasure({"request_id": wave_id, "wave": key}, profile)
    counts = closed_counts(ledger_url, wave_id + "-")
    report = json.loads(
        services.s3.get_object(Bucket=constants.EXPORTS_BUCKET, Key=f"_waves/{wave_id}/report.json")["Body"].read()
    )
    per_minute = round(counts.get("completed", 0) / result["wall_s"] * 60, 1)
    print(f"[wave] {result['wall_s']}s, {counts}, {per_minute} subjects/min", flush=True)
    return {
        "size": size,
        "objects": objects,
        **result,
        "ledger_status": counts,
        "line_counts": report["counts"],
        "subjects_per_minute": per_minute,
    }


def fides(subjects: int, runs: int) -> dict:
    """Fides's anchor with the same subject count; erasure medians from its results file."""
    out = RESULTS / f"fides_n{subjects}.json"
    print(f"[fides] run.sh {subjects} worker {runs} ...", flush=True)
    started = time.perf_counter()
    subprocess.run(
        ["bash", str(FIDES / "run.sh"), str(subjects), "worker", str(runs)],
        check=True,
        env={**os.environ, "OUT": str(out)},
        stdout=subprocess.DEVNULL,
    )
    data = json.loads(out.read_text())
    return {"seconds": round(time.perf_counter() - started), "results": data}


def fides_erasure_walls(data: dict) -> list[float]:
    """Wall seconds (client POST -> seen complete) of the anchor's completed erasures."""
    return [r["wall_s"] for r in data["requests"] if r["policy"] == "anchor_erasure" and r["status"] == "complete"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres-url", default=DEFAULT_URL)
    parser.add_argument("--small", type=int, default=720, help="subjects of the ~10k-row world")
    parser.add_argument("--large", type=int, default=75000, help="subjects of the ~1M-row world")
    parser.add_argument("--singles", type=int, default=3, help="single erasures per size (after a warm-up)")
    parser.add_argument("--wave", type=int, default=10000, help="erasures in the wave")
    parser.add_argument("--fides-runs", type=int, default=10, help="erasures (and accesses) Fides answers")
    parser.add_argument("--no-fides", action="store_true")
    parser.add_argument("--wave-only", action="store_true", help="no single erasures (and no small world)")
    parser.add_argument("--profile", help="write a cProfile of the wave's run to this file")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    ledger_url = fresh_schema(args.postgres_url, LEDGER_SCHEMA)
    from include.dsr.ledger.api import Ledger

    Ledger(ledger_url).create_schema()
    report: dict = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count()}

    report["ratios"] = {}
    if args.wave_only:
        paths, facts = build(args.postgres_url, "bench_erase_large", args.large)
        point_airflow_at(paths, ledger_url)
        services = Services(paths)
        report["world"] = facts
    else:
        small = singles(args.postgres_url, "bench_erase_small", args.small, args.singles, ledger_url)
        small.pop("paths")
        small.pop("services").stop()
        large = singles(args.postgres_url, "bench_erase_large", args.large, args.singles, ledger_url)
        paths, services = large.pop("paths"), large.pop("services")
        sizes = (("small", small), ("large", large))
        med = {label: statistics.median(r["wall_s"] for r in size["runs"]) for label, size in sizes}
        report["single"] = {"small": small, "large": large, "median_wall_s": med}
        report["ratios"]["single erasure, ~1M rows / ~10k rows (median wall)"] = round(med["large"] / med["small"], 2)
        report["world"] = {k: large[k] for k in ("schema", "subjects", "platform_rows")}
    try:
        report["wave"] = wave(paths, services, args.wave, ledger_url, skip=args.singles + 1, profile=args.profile)
    finally:
        services.stop()
    if not args.no_fides:
        # Fides's world: N accounts, 3N orders, N tickets; N so that it holds as many rows as ours.
        anchor = fides(max(10000, report["world"]["platform_rows"] // 5), args.fides_runs)
        walls = fides_erasure_walls(anchor["results"])
        report["fides"] = anchor
        if walls:
            rate = 60 / statistics.median(walls)
            report["fides_erasures_per_minute"] = round(rate, 1)
            report["ratios"]["wave subjects/min / Fides erasures/min"] = round(
                report["wave"]["subjects_per_minute"] / rate, 1
            )
    print("\n" + json.dumps({k: report[k] for k in ("ratios",)}, indent=1))
    if "single" in report:
        print(f"single erasure median wall: {report['single']['median_wall_s']}")
    w = report["wave"]
    print(f"wave of {w['size']}: {w['wall_s']}s ({w['subjects_per_minute']} subjects/min); tasks: {w['task_s']}")
    (RESULTS / "erasure.json").write_text(json.dumps(report, indent=1, default=str))
    print("written bench/results/erasure.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
