"""1,000 open access requests waiting on a partner cost no worker slot: shown on the Celery stack.

Starts ``make stack`` (``launcher up --celery --no-requests``: PostgreSQL metadata DB, Redis,
two Celery workers of 4 slots each), puts the payment partner ``payflow`` in ``late`` mode (it
accepts requests and answers a simulated day later), and triggers one access wave of ``--wave`` customers
whose data went to payflow. Once the wave's payflow gather has deferred, it samples Airflow
every 2 s for ``--hold`` seconds: task instances running, queued and deferred (all DAGs), and
the requests the ledger shows ``waiting_on_partner``. Meanwhile one single access request of
someone else is triggered and must finish (the workers are free). Then a simulated day passes for payflow
(it answers) and the wave must close every request. Prints the samples' maxima and the times;
writes ``bench/results/deferred_wave.json``. Takes about 10-20 minutes.

    .venv/bin/python bench/bench_deferred_wave.py [--wave 1000] [--hold 60]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_e2e as demo

from include import constants, settings

PARTNER = "payflow"
VERIFIED = {"method": "logged_in_session", "verified_at": "2026-11-30T09:00:00Z"}


def _customers(count: int, at_partner: bool | None = True) -> list[tuple[str, str]]:
    """(person key, email) of customers whose data went (or, ``False``, did not go; ``None``: either)
    to payflow, and to no manual partner (their runs need no human)."""
    from include.dsr.core.data_map import load_data_map

    manual = [s.key for s in load_data_map().partners() if s.channel == constants.CHANNEL_MANUAL]
    truth = sqlite3.connect(settings.DEMO_DIR / "ground_truth.sqlite")
    marks = ",".join("?" * len(manual))
    payflow = (
        ""
        if at_partner is None
        else f"AND {'' if at_partner else 'NOT '}EXISTS (SELECT 1 FROM owned_rows o "
        "WHERE o.person_key = p.person_key AND o.system = ?) "
    )
    rows = truth.execute(
        "SELECT p.person_key, p.email FROM people p WHERE p.email IS NOT NULL AND p.kind = 'customer' "
        f"{payflow}"
        f"AND NOT EXISTS (SELECT 1 FROM owned_rows o WHERE o.person_key = p.person_key AND o.system IN ({marks})) "
        "ORDER BY p.person_key",
        ([] if at_partner is None else [PARTNER]) + manual,
    ).fetchall()
    truth.close()
    return rows[:count]


def _admin(method: str, path: str, body: dict) -> None:
    from include.demo.airflow_env import demo_connections

    port = demo_connections()[f"partner_{PARTNER}"]["port"]
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10):  # noqa: S310 - the local simulator
        pass


def _partner_silent() -> None:
    """payflow accepts requests and answers them only a day later (simulated clock)."""
    _admin("PUT", "/_admin/faults", {"mode": "late", "late_hours": 24})


def _partner_answers() -> None:
    """A day passes for payflow: the requests it holds complete; new ones complete at once."""
    _admin("POST", "/_admin/clock", {"advance_hours": 25})
    _admin("PUT", "/_admin/faults", {"mode": "ok"})


def _ledger_waiting(prefix: str) -> int:
    return demo.ledger_status_counts(demo.demo_ledger_url(), prefix).get("waiting_on_partner", 0)


def _states(api: demo.BenchApi) -> dict[str, int]:
    found = {}
    for state in ("running", "queued", "scheduled", "deferred"):
        page = api.get("/api/v2/dags/~/dagRuns/~/taskInstances", state=[state], limit=1)
        found[state] = int(page["total_entries"])
    return found


def _wait_for(api: demo.BenchApi, dag_id: str, run_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.run(dag_id, run_id)
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(2)
    raise TimeoutError(f"{dag_id} {run_id} not finished in {timeout:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wave", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=60, help="seconds of sampling while the wave waits")
    args = parser.parse_args(argv)
    demo.RESULTS.mkdir(parents=True, exist_ok=True)
    log_path = demo.RESULTS / "deferred_wave_stack.log"
    started = time.monotonic()
    proc = demo.start_demo(settings.DAGS_FOLDER, log_path, extra_args=("--celery",))
    report: dict = {"stack_up_s": round(time.monotonic() - started)}
    try:
        from include.demo.world import s3_client_for

        api = demo.BenchApi(f"http://localhost:{settings.AIRFLOW_PORT}", demo.DEMO_USER, demo.DEMO_PASSWORD, timeout=60)
        wave_people = _customers(args.wave)
        single = _customers(1, at_partner=False)[0]  # someone payflow never heard of: must not wait
        wave_id = f"BENCH-DWAVE-{int(time.time())}"
        body = "\n".join(
            json.dumps({"request_id": f"{wave_id}-{i:05d}", "subject": {"email": e}, "verification": VERIFIED})
            for i, (_, e) in enumerate(wave_people)
        )
        s3 = s3_client_for(f"http://127.0.0.1:{settings.S3_PORT}")
        key = f"_waves/{wave_id}.jsonl"
        s3.put_object(Bucket=constants.EXPORTS_BUCKET, Key=key, Body=body.encode())
        _partner_silent()
        api.unpause(constants.DAG_ACCESS)
        t0 = time.monotonic()
        run_id = api.post_run(constants.DAG_ACCESS, {"request_id": wave_id, "wave": key})
        print(f"wave of {len(wave_people)} access requests triggered: {run_id}", flush=True)
        while True:  # until payflow's gather has deferred and nothing else of the wave is left to run
            tis = api.task_instances(constants.DAG_ACCESS, run_id)
            deferred = [t for t in tis if t["state"] == "deferred"]
            busy = [t for t in tis if t["state"] in ("running", "queued", "scheduled")]
            if deferred and not busy:
                break
            if time.monotonic() - t0 > 1800:
                raise TimeoutError("the wave's partner gather never deferred")
            time.sleep(2)
        report["seconds_until_waiting"] = round(time.monotonic() - t0)
        single_id = api.post_run(
            constants.DAG_ACCESS,
            {"request_id": f"{wave_id}-SINGLE", "subject": {"email": single[1]}, "verification": VERIFIED},
        )
        samples = []
        hold_until = time.monotonic() + args.hold
        while time.monotonic() < hold_until:
            samples.append({**_states(api), "ledger_waiting": _ledger_waiting(wave_id + "-0")})
            time.sleep(2)
        single_run = _wait_for(api, constants.DAG_ACCESS, single_id, 600)
        report["while_waiting"] = {
            "samples": len(samples),
            "max_running_tis": max(s["running"] for s in samples),
            "max_deferred_tis": max(s["deferred"] for s in samples),
            "min_ledger_waiting_on_partner": min(s["ledger_waiting"] for s in samples),
            "single_request_meanwhile": single_run["state"],
        }
        print(json.dumps(report["while_waiting"]), flush=True)
        _partner_answers()
        t1 = time.monotonic()
        run = _wait_for(api, constants.DAG_ACCESS, run_id, 3600)
        report["after_partner_answers_s"] = round(time.monotonic() - t1)
        report["wave_total_s"] = round(time.monotonic() - t0)
        report["wave_state"] = run["state"]
        report["wave_size"] = len(wave_people)
        report["ledger_waiting_after"] = _ledger_waiting(wave_id + "-0")
    finally:
        demo.stop_demo(proc)
    print(json.dumps(report, indent=1))
    (demo.RESULTS / "deferred_wave.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
