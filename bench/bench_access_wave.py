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
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_erasure as world

from include import constants


def access_wave(services, paths, size: int, ledger_url: str, profile: str | None) -> dict:
    chosen = world.people(paths, size)
    world.upload_objects(services.s3, paths, [k for k, _ in chosen])
    wave_id = f"BENCH-AWAVE-{int(time.time())}"
    body = "\n".join(
        json.dumps({"request_id": f"{wave_id}-{i:05d}", "subject": {"email": email}, "verification": world.VERIFIED})
        for i, (_, email) in enumerate(chosen)
    )
    key = f"_waves/{wave_id}.jsonl"
    services.s3.put_object(Bucket=constants.EXPORTS_BUCKET, Key=key, Body=body.encode())
    print(f"[wave] {size} access requests as one run ...", flush=True)
    result = world.run_right_dag("access", {"request_id": wave_id, "wave": key}, profile, services.pids())
    counts = world.closed_counts(ledger_url, wave_id + "-")
    per_minute = round(counts.get("completed", 0) / result["wall_s"] * 60, 1)
    print(f"[wave] {result['wall_s']}s, {counts}, {per_minute} requests/min", flush=True)
    return {"size": size, **result, "ledger_status": counts, "requests_per_minute": per_minute}


def fides_access_walls(data: dict) -> list[float]:
    return [r["wall_s"] for r in data["requests"] if r["policy"] == "anchor_access" and r["status"] == "complete"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres-url", default=world.DEFAULT_URL)
    parser.add_argument("--large", type=int, default=75000, help="subjects of the ~1M-row world")
    parser.add_argument("--wave", type=int, default=1000, help="access requests in the wave")
    parser.add_argument("--fides-runs", type=int, default=10, help="access (and erasure) requests Fides answers")
    parser.add_argument("--no-fides", action="store_true")
    parser.add_argument("--profile", help="write a cProfile of the wave's run to this file")
    args = parser.parse_args(argv)
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
        report["wave"] = access_wave(services, paths, args.wave, ledger_url, args.profile)
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
    print(f"CPU seconds: {json.dumps(w['cpu'], indent=1)}")
    (world.RESULTS / "access_wave.json").write_text(json.dumps(report, indent=1, default=str))
    print("written bench/results/access_wave.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
