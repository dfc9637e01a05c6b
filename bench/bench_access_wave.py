"""Access requests as one wave in a ~1M-row world on PostgreSQL, side by side with Fides answering
access requests one by one.

The world, the services (moto S3, SMTP sink, partner simulators, each in its own process) and the
ledger schema are :mod:`bench_erasure`'s. The wave is ``--wave`` ordinary customers and partner
users with an email, one JSON line each, run with ``dag.test()`` (the DAG's own tasks in this
process: intake of every line, one resolution, one export per collection group and one call per
partner for the whole wave, one GX check per unit, a package, ledger trail and notice per
request). Figures: the wave's wall time from ``dag.test()`` start to return, per-task seconds, the
ledger status of every request, requests per minute; then ``../shared/anchors/fides/run.sh`` (a
fresh Fides on its own PostgreSQL cluster, one access request at a time over REST) and the ratio
of the rates. Writes ``bench/results/access_wave.json``; exits non-zero only on errors.

    .venv/bin/python bench/bench_access_wave.py [--postgres-url URL] [--wave 1000] [--large 75000]
                                                [--fides-runs 10] [--no-fides] [--profile FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_erasure as world

from include import constants

# Ops' steps: marked done at once, as dag.test(mark_success_pattern=...) does.
HUMAN_STEPS = ("confirm_identity", "confirm_manual_partner")


def wave_conf(services, paths, people: list[tuple[str, str]], wave_id: str) -> dict:
    """Upload the people's objects and the wave file; the run conf of that wave."""
    world.upload_objects(services.s3, paths, [k for k, _ in people])
    body = "\n".join(
        json.dumps({"request_id": f"{wave_id}-{i:05d}", "subject": {"email": email}, "verification": world.VERIFIED})
        for i, (_, email) in enumerate(people)
    )
    key = f"_waves/{wave_id}.jsonl"
    services.s3.put_object(Bucket=constants.EXPORTS_BUCKET, Key=key, Body=body.encode())
    return {"request_id": wave_id, "wave": key}


def access_wave(services, paths, size: int, ledger_url: str, profile: str | None, stack=None, warmup: int = 0) -> dict:
    """The wave with ``dag.test()`` in this process, or on ``stack`` (a :class:`stack_run.BenchStack`).

    :param warmup: with ``dag.test()``, first run a wave of this many other people, untimed: a
        running Airflow's api-server and worker have served task runs before (``dag.test()``'s first
        task pays 3 s or so for its in-process API's first task start), as Fides's median leaves
        out its first request's start-up
    """
    chosen = world.people(paths, size + warmup)
    stamp = int(time.time())
    if stack is None and warmup:
        print(f"[warm-up] a wave of {warmup} other people, not timed ...", flush=True)
        warm = world.run_right_dag("access", wave_conf(services, paths, chosen[size:], f"BENCH-AWARM-{stamp}"))
        print(f"[warm-up] {warm['wall_s']}s, {warm['state']}", flush=True)
    conf = wave_conf(services, paths, chosen[:size], f"BENCH-AWAVE-{stamp}")
    wave_id = conf["request_id"]
    if stack is None:
        print(f"[wave] {size} access requests as one run with dag.test() ...", flush=True)
        result = world.run_right_dag("access", conf, profile, services.pids())
    else:
        print(f"[wave] {size} access requests as one run on the Celery stack ...", flush=True)
        result = stack_wave(stack, conf, {**services.pids(), **stack.pids()})
    counts = world.closed_counts(ledger_url, wave_id + "-")
    per_minute = round(counts.get("completed", 0) / result["wall_s"] * 60, 1)
    print(f"[wave] {result['wall_s']}s, {counts}, {per_minute} requests/min", flush=True)
    return {"size": size, **result, "ledger_status": counts, "requests_per_minute": per_minute}


def stack_wave(stack, conf: dict, cpu_of: dict[str, int]) -> dict:
    from cpu_usage import CpuUsage

    stack.ready(constants.DAG_ACCESS)
    with CpuUsage(cpu_of, interval=1.0) as cpu:  # a dozen process trees: sampled less often
        result = stack.run(constants.DAG_ACCESS, conf, mark_success=HUMAN_STEPS)
    spans = result.pop("spans")
    stages = {task_id: span for task_id, span in spans.items() if result["task_s"][task_id] >= 1}
    return {**result, "cpu": cpu.summary(stages)}


def fides_access_walls(data: dict) -> list[float]:
    return [r["wall_s"] for r in data["requests"] if r["policy"] == "anchor_access" and r["status"] == "complete"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres-url", default=world.DEFAULT_URL)
    parser.add_argument("--large", type=int, default=75000, help="subjects of the ~1M-row world")
    parser.add_argument("--wave", type=int, default=1000, help="access requests in the wave")
    parser.add_argument("--fides-runs", type=int, default=10, help="access (and erasure) requests Fides answers")
    parser.add_argument("--no-fides", action="store_true")
    parser.add_argument(
        "--warmup", type=int, default=1, help="people in an untimed wave run first (dag.test only; 0: none)"
    )
    parser.add_argument("--profile", help="write a cProfile of the wave's run to this file (dag.test only)")
    parser.add_argument(
        "--stack", action="store_true", help="run the wave on the Celery stack (2 workers) instead of dag.test()"
    )
    args = parser.parse_args(argv)
    if args.stack and args.profile:
        parser.error("--profile profiles dag.test()'s process; with --stack the tasks run in the workers")
    world.RESULTS.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    ledger_url = world.fresh_schema(args.postgres_url, world.LEDGER_SCHEMA)
    from include.dsr.ledger.api import Ledger

    Ledger(ledger_url).create_schema()
    report: dict = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "ratios": {}}
    paths, facts = world.build(args.postgres_url, "bench_access_large", args.large)
    report["world"] = facts
    world.point_airflow_at(paths, ledger_url)
    services = world.Services(paths)
    try:
        if args.stack:
            from stack_run import BenchStack

            port = int(os.environ.get("DSR_BENCH_BASE_PORT", "31400")) + 20
            with BenchStack(world._HOME / "stack", args.postgres_url, port) as stack:
                report["stack_up_s"] = stack.up_s
                print(f"[stack] up in {stack.up_s}s", flush=True)
                report["wave"] = access_wave(services, paths, args.wave, ledger_url, None, stack)
        else:
            report["wave"] = access_wave(services, paths, args.wave, ledger_url, args.profile, warmup=args.warmup)
    finally:
        services.stop()
    if not args.no_fides:
        anchor = world.fides(max(10000, facts["platform_rows"] // 5), args.fides_runs)
        walls = fides_access_walls(anchor["results"])
        report["fides"] = anchor
        if walls:
            rate = 60 / statistics.median(walls)
            report["fides_access_per_minute"] = round(rate, 1)
            report["ratios"]["wave requests/min / Fides access requests/min"] = round(
                report["wave"]["requests_per_minute"] / rate, 1
            )
    w = report["wave"]
    print("\n" + json.dumps(report["ratios"], indent=1))
    print(f"wave of {w['size']}: {w['wall_s']}s ({w['requests_per_minute']} requests/min); tasks: {w['task_s']}")
    print(f"mapped instances: {w.get('mapped_task_s')}")
    print(f"CPU seconds: {json.dumps(w['cpu'], indent=1)}")
    out = world.RESULTS / f"access_wave{'_stack' if args.stack else ''}.json"
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"written {out.relative_to(world.ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
