"""A burst of submissions, half through the ``dsr`` CLI and half through the REST API, all at once.

On the Celery stack (default: ``launcher up --celery``, PostgreSQL metadata DB, Redis, two
workers) every submission must be accepted and every run must finish: it starts the stack on
an empty metadata DB and broker (dropping ``make stack``'s, so stop a stack you need first),
picks ``--submissions`` distinct customers with an email and no data at a manual partner (no
human step), and fires them together: ``--submissions / 2`` ``dsr submit access`` processes,
``--parallel`` at a time, beside as many REST ``POST /dagRuns`` from ``--parallel`` threads.
It counts what each submission got (accepted, refused, retried: the CLI and the API client
retry a ``503`` or a ``500 Database error`` with backoff and say so), then waits until every
run has finished, sampling queued / running task instances, and reads each request's status
in the ledger.

With ``--embedded`` it fires the same burst at the embedded demo (SQLite metadata DB) and
only counts the submissions (that DB takes one writer at a time: the figure is how many
needed a retry). Writes ``bench/results/burst[_embedded].json``.

    .venv/bin/python bench/bench_burst.py [--submissions 200] [--parallel 20] [--embedded] [--timeout 5400]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_deferred_wave as stack_bench
import bench_e2e as demo

from include import constants, settings

VERIFIED_BY = "logged_in_session"
RUN_LINE = re.compile(r"^run\s+(\S+)", re.MULTILINE)


def _customers(count: int) -> list[str]:
    """Emails of distinct customers with no data at a manual partner (their runs need no human)."""
    found = stack_bench._customers(count, at_partner=None)
    if len(found) < count:
        raise SystemExit(f"the demo world has {len(found)} such customers, fewer than {count}")
    return [email for _, email in found]


def _submit_cli(request_id: str, email: str) -> dict:
    started = time.monotonic()
    done = subprocess.run(
        [
            str(demo.ROOT / ".venv" / "bin" / "dsr"),
            "submit",
            "access",
            "--email",
            email,
            "--verified-by",
            VERIFIED_BY,
            "--request-id",
            request_id,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    found = RUN_LINE.search(done.stdout)
    return {
        "via": "cli",
        "request_id": request_id,
        "accepted": done.returncode == 0 and found is not None,
        "run_id": found.group(1) if found else None,
        "retries": done.stderr.count("retrying in"),
        # The CLI's own message (it never prints the identities it was given).
        "error": None if done.returncode == 0 else done.stderr.strip().splitlines()[-1:],
        "seconds": round(time.monotonic() - started, 2),
    }


def _submit_rest(base_url: str, request_id: str, email: str) -> dict:
    retries: list[str] = []
    api = demo.BenchApi(base_url, demo.DEMO_USER, demo.DEMO_PASSWORD, timeout=120, on_retry=retries.append)
    started = time.monotonic()
    conf = {
        "request_id": request_id,
        "subject": {"email": email},
        "verification": {"method": VERIFIED_BY, "verified_at": stack_bench.VERIFIED["verified_at"]},
    }
    try:
        run_id, error = api.post_run(constants.DAG_ACCESS, conf), None
    except Exception as exc:  # counted, not raised: the burst goes on
        # Type and status only: an API error can quote the conf it refused (the subject's email).
        run_id, error = None, f"{type(exc).__name__} {getattr(exc, 'status', '')}".strip()
    return {
        "via": "rest",
        "request_id": request_id,
        "accepted": run_id is not None,
        "run_id": run_id,
        "retries": len(retries),
        "error": error,
        "seconds": round(time.monotonic() - started, 2),
    }


def fire(base_url: str, emails: list[str], burst_id: str, parallel: int) -> tuple[list[dict], float]:
    """Every submission at once: CLI processes and REST threads side by side."""
    half = len(emails) // 2
    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as cli_pool, ThreadPoolExecutor(parallel) as rest_pool:
        cli = [cli_pool.submit(_submit_cli, f"{burst_id}-C{i:04d}", e) for i, e in enumerate(emails[:half])]
        rest = [
            rest_pool.submit(_submit_rest, base_url, f"{burst_id}-R{i:04d}", e) for i, e in enumerate(emails[half:])
        ]
        results = [f.result() for f in cli + rest]
    return results, time.monotonic() - started


def wait_all(api: demo.BenchApi, run_ids: set[str], timeout: float) -> tuple[dict[str, str], list[dict]]:
    """Poll the access DAG's runs until every one of ``run_ids`` has finished."""
    states: dict[str, str] = {}
    samples: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        offset = 0
        while True:
            page = api.get(f"/api/v2/dags/{constants.DAG_ACCESS}/dagRuns", limit=100, offset=offset)["dag_runs"]
            states.update({r["dag_run_id"]: r["state"] for r in page if r["dag_run_id"] in run_ids})
            if len(page) < 100:
                break
            offset += 100
        tally = Counter(states.get(r, "unknown") for r in run_ids)
        tis = {f"tis_{state}": n for state, n in stack_bench._states(api).items()}
        runs = {f"runs_{state}": n for state, n in sorted(tally.items())}
        samples.append({"at_s": round(time.monotonic() - (deadline - timeout)), **tis, **runs})
        print(f"  {samples[-1]}", flush=True)
        if tally["success"] + tally["failed"] == len(run_ids):
            break
        time.sleep(15)
    return states, samples


def fresh_celery_stack() -> None:
    """An empty metadata DB and broker: runs left queued by an earlier, interrupted stack would
    otherwise be scheduled before the burst's (Airflow resumes them, as it should)."""
    import redis

    from include.demo import celery_stack

    celery_stack.drop_database(celery_stack.METADATA_URL)
    redis.Redis.from_url(celery_stack.BROKER_URL).flushdb()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=20, help="CLI processes (and REST threads) at a time")
    parser.add_argument("--embedded", action="store_true", help="the embedded demo; count submissions only")
    parser.add_argument("--timeout", type=float, default=5400, help="seconds to wait for every run")
    args = parser.parse_args(argv)
    demo.RESULTS.mkdir(parents=True, exist_ok=True)
    name = "burst_embedded" if args.embedded else "burst"
    if not args.embedded:
        fresh_celery_stack()
    started = time.monotonic()
    proc = demo.start_demo(
        settings.DAGS_FOLDER, demo.RESULTS / f"{name}_stack.log", extra_args=() if args.embedded else ("--celery",)
    )
    report: dict = {"stack": "embedded" if args.embedded else "celery", "stack_up_s": round(time.monotonic() - started)}
    try:
        base_url = f"http://localhost:{settings.AIRFLOW_PORT}"
        api = demo.BenchApi(base_url, demo.DEMO_USER, demo.DEMO_PASSWORD, timeout=60)
        api.unpause(constants.DAG_ACCESS)
        burst_id = f"BURST-{int(time.time())}"
        emails = _customers(args.submissions)
        print(f"[burst] {len(emails)} submissions ({len(emails) // 2} CLI, the rest REST) ...", flush=True)
        results, fire_s = fire(base_url, emails, burst_id, args.parallel)
        accepted = [r for r in results if r["accepted"]]
        report["submissions"] = {
            "total": len(results),
            "accepted": len(accepted),
            "seconds": round(fire_s, 1),
            "per_minute": round(len(accepted) / fire_s * 60, 1),
            "by_channel": {
                via: {
                    "accepted": sum(r["accepted"] for r in results if r["via"] == via),
                    "refused": sum(not r["accepted"] for r in results if r["via"] == via),
                    "retried": sum(r["retries"] > 0 for r in results if r["via"] == via),
                    "retries": sum(r["retries"] for r in results if r["via"] == via),
                    "max_seconds": max((r["seconds"] for r in results if r["via"] == via), default=0),
                }
                for via in ("cli", "rest")
            },
            "errors": Counter(str(r["error"]) for r in results if not r["accepted"]).most_common(5),
        }
        print(json.dumps(report["submissions"], indent=1), flush=True)
        if not args.embedded:
            t0 = time.monotonic()
            states, samples = wait_all(api, {r["run_id"] for r in accepted}, args.timeout)
            finished_s = time.monotonic() - t0 + fire_s
            report["runs"] = {
                "states": dict(Counter(states.values())),
                "all_finished_s": round(finished_s),
                "finished_per_minute": round(len(states) / finished_s * 60, 1),
                "max_running_tis": max(s["tis_running"] for s in samples),
                "max_queued_tis": max(s["tis_queued"] for s in samples),
                "samples": samples,
            }
            report["ledger_status"] = demo.ledger_status_counts(demo.demo_ledger_url(), burst_id + "-")
    finally:
        demo.stop_demo(proc)
    summary = {k: v for k, v in report.items() if k != "runs"} | {
        "runs": {k: v for k, v in report.get("runs", {}).items() if k != "samples"}
    }
    print(json.dumps(summary, indent=1))
    (demo.RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1))
    accepted_all = report["submissions"]["accepted"] == report["submissions"]["total"]
    finished_all = args.embedded or report["runs"]["states"].get("success", 0) == report["submissions"]["total"]
    return 0 if accepted_all and finished_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
