"""End-to-end time of one access (or erasure) request under the running scheduler vs a no-op DAG of the same shape.

Starts the demo (``include.demo.launcher up --no-requests``) with Airflow's dags folder pointed
at a temp folder that links every ``dags/*.py`` plus ``bench/dags/dsr_noop_shape.py``, then
triggers through the REST API v2, alternately, ``--runs`` times each: ``dsr_access`` for a hard
case whose data never went to a manual partner (H01 unless the ground truth says otherwise; a
manual partner would wait for a human), and ``dsr_noop_shape`` with the same fan-out
(``n_targets`` = the access run's number of ``gather`` instances). The first run of each DAG is a
warm-up, reported apart.

Per run it measures:

* ``wall_s``: trigger POST -> run seen ``success`` (polled every 0.5 s, so up to +0.5 s);
* ``task_sum_s``: sum of ``duration`` over all task instances (all work, parallel or not);
* ``critical_task_s``: summed durations along the longest dependency chain of the DAG's task
  graph, a mapped task weighing its longest instance (they run side by side) and a skipped
  task nothing; a task's ``duration`` runs from the moment the worker reports it running to
  its end, so it includes the task process's DAG-file parse and imports, and, for a ``gather``
  that deferred to the triggerer, the deferred wait;
* ``overhead_s`` = ``wall_s - critical_task_s``: time the request waits on Airflow rather than
  on a task (scheduler loops, executor hand-off, process start), split into before the first
  task, gaps between tasks of the chain, the spread of the mapped stage beyond its longest
  instance (e.g. the 6-per-run cap on ``gather``), and after the last task (run marked
  ``success`` + polling).

``--right erasure`` does the same for ``dsr_erasure`` against ``bench/dags/dsr_noop_erasure_shape.py``
(``n_targets`` = the erasure run's ``tell_partner`` instances), each run erasing another ordinary
customer whose data went to API or drop-box partners and no manual partner (an erased subject
cannot be erased twice; a manual partner would wait for a human).

It also notes, per run, the ``gather`` instances that deferred, the tasks that needed a retry
(e.g. an attempt the scheduler killed: a stale "success" of a deferral's exit, processed after
the task had resumed, see apache/airflow#72716) and the host's load average before the run:
other work on the host inflates every figure.

Prints a table and ratios (no personal data), writes ``bench/results/e2e.json``; exits non-zero
only on errors (a run failed or timed out, the demo did not start), never on slowness.

Run (from the project root; stops any running demo first, takes a few minutes)::

    .venv/bin/python bench/bench_e2e.py [--runs 5] [--right access|erasure]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from include import constants, settings  # noqa: E402
from include.demo.airflow_env import AIRFLOW_HOME, DEMO_PASSWORD, DEMO_USER  # noqa: E402
from include.demo.people import hard_case_people  # noqa: E402

try:  # the shared client; older trees kept it in the demo's sample requests
    from include.dsr.cli.airflow_api import AirflowApi
except ImportError:  # pragma: no cover
    from include.demo.sample_requests import AirflowApi

RESULTS = ROOT / "bench" / "results"
NOOP_DAGS = {constants.DAG_ACCESS: "dsr_noop_shape", constants.DAG_ERASURE: "dsr_noop_erasure_shape"}
NOOP_FILES = [ROOT / "bench" / "dags" / f"{name}.py" for name in NOOP_DAGS.values()]
#: The mapped task whose instances the no-op DAG copies (``n_targets``), and the task whose XCom names them.
FAN_OUT = {
    constants.DAG_ACCESS: ("gather", "plan_fan_out"),
    constants.DAG_ERASURE: ("tell_partner", "plan_erasure"),
    NOOP_DAGS[constants.DAG_ACCESS]: ("gather", None),
    NOOP_DAGS[constants.DAG_ERASURE]: ("tell_partner", None),
}
PREFERRED_CASE = "H01"
POLL_SECONDS = 0.5
RUN_TIMEOUT_SECONDS = 600
UP_TIMEOUT_SECONDS = 900
UP_MARKER = "Fabconnect DSR is up"


class BenchApi(AirflowApi):
    def get(self, path: str, **query) -> dict:
        return self._request("GET", path + (f"?{urllib.parse.urlencode(query, doseq=True)}" if query else ""))

    def busy_runs(self, except_dags: set[str]) -> list[str]:
        """Queued or running runs of other DAGs (e.g. the hourly SLA monitor), as ``dag_id``s."""
        runs = self.get("/api/v2/dags/~/dagRuns", state=["queued", "running"], limit=100)["dag_runs"]
        return sorted(r["dag_id"] for r in runs if r["dag_id"] not in except_dags)

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def post_run(self, dag_id: str, conf: dict) -> str:
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})[
            "dag_run_id"
        ]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        tis, offset = [], 0
        while True:
            page = self.get(path, limit=100, offset=offset)["task_instances"]
            tis += page
            if len(page) < 100:
                return tis
            offset += 100

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/"
            f"{task_id}/xcomEntries/{key}"
        )
        value = self.get(path)["value"]
        # The API may hand the value back JSON-encoded, or as the Python repr of a list of dicts.
        for _ in range(3):
            if not isinstance(value, str):
                break
            try:
                value = json.loads(value)
            except ValueError:
                import ast

                value = ast.literal_eval(value)
        return value

    def graph(self, dag_id: str) -> dict[str, list[str]]:
        return {t["task_id"]: t["downstream_task_ids"] for t in self.get(f"/api/v2/dags/{dag_id}/tasks")["tasks"]}


# ---------------------------------------------------------------- demo lifecycle


def dags_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="dsr-bench-dags-"))
    for src in [*sorted((ROOT / "dags").glob("*.py")), *NOOP_FILES]:
        (folder / src.name).symlink_to(src)
    return folder


def start_demo(folder: Path, log_path: Path, extra_args: tuple[str, ...] = ()) -> subprocess.Popen:
    py = str(ROOT / ".venv" / "bin" / "python")
    env = {
        **os.environ,
        "DSR_DAGS_FOLDER": str(folder),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    subprocess.run(
        [py, "-m", "include.demo.launcher", "down"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )
    log = open(log_path, "wb")  # noqa: SIM115 - closed when the launcher is stopped
    proc = subprocess.Popen(
        [py, "-m", "include.demo.launcher", "up", "--no-requests", *extra_args],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log_file = log
    started = time.monotonic()
    try:
        while UP_MARKER not in log_path.read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(f"the demo launcher exited with code {proc.returncode}; see {log_path}")
            if time.monotonic() - started > UP_TIMEOUT_SECONDS:
                raise RuntimeError(f"the demo did not come up in {UP_TIMEOUT_SECONDS}s; see {log_path}")
            time.sleep(1)
    except BaseException:
        stop_demo(proc)
        raise
    print(
        f"demo up in {time.monotonic() - started:.0f}s (launcher pid {proc.pid}, log {log_path.relative_to(ROOT)})",
        flush=True,
    )
    return proc


def stop_demo(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the launcher stops its children's process groups
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            print("the launcher did not stop in 120s; killing it", flush=True)
            proc.kill()
            proc.wait()
    proc.log_file.close()


def demo_ledger_url() -> str:
    """SQLAlchemy URL of the running demo's (or stack's) request ledger, from its connection."""
    from include.demo.airflow_env import demo_connections

    conn = demo_connections()[constants.CONN_LEDGER]
    extra = conn.get("extra") or {}
    url = extra.get("sqlalchemy_url") if isinstance(extra, dict) else None
    return url or f"sqlite:///{conn['host']}"


def ledger_status_counts(ledger_url: str, prefix: str) -> dict[str, int]:
    """Requests per ledger status among those whose id starts with ``prefix``."""
    from sqlalchemy import create_engine, text

    engine = create_engine(ledger_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, count(*) FROM dsr_requests WHERE request_id LIKE :p GROUP BY status"),
            {"p": f"{prefix}%"},
        ).all()
    engine.dispose()
    return {str(status): int(n) for status, n in rows}


# ---------------------------------------------------------------- subject choice


def pick_subject() -> tuple[str, str]:
    """(case key, email) of a hard case with partner data but none at a manual partner, H01 first."""
    from include.demo.generator import PARTNERS

    partners = {p.slug for p in PARTNERS}
    manual = {p.slug for p in PARTNERS if p.channel == constants.CHANNEL_MANUAL}
    truth = sqlite3.connect(settings.DEMO_DIR / "ground_truth.sqlite")
    people = sorted(hard_case_people(), key=lambda p: (p.key != PREFERRED_CASE, p.key))
    try:
        for person in people:
            holders = {
                r[0] for r in truth.execute("SELECT DISTINCT system FROM owned_rows WHERE person_key=?", (person.key,))
            }
            if holders & partners and not holders & manual:
                if person.key != PREFERRED_CASE:
                    print(f"{PREFERRED_CASE} has data at a manual partner; using hard case {person.key}")
                return person.key, person.email
    finally:
        truth.close()
    raise RuntimeError("no hard case without data at a manual partner in the ground truth")


def pick_erasure_subjects(count: int) -> list[tuple[str, str]]:
    """(person key, email) of ``count`` ordinary customers with data at API / drop-box partners, none manual."""
    from include.demo.generator import PARTNERS

    partners = {p.slug for p in PARTNERS}
    manual = {p.slug for p in PARTNERS if p.channel == constants.CHANNEL_MANUAL}
    truth = sqlite3.connect(settings.DEMO_DIR / "ground_truth.sqlite")
    chosen = []
    try:
        people = truth.execute(
            "SELECT person_key, email FROM people WHERE kind = 'customer' AND person_key LIKE 'P%' ORDER BY person_key"
        ).fetchall()
        for key, email in people:
            holders = {r[0] for r in truth.execute("SELECT DISTINCT system FROM owned_rows WHERE person_key=?", (key,))}
            if email and holders & partners and not holders & manual:
                chosen.append((key, email))
                if len(chosen) == count:
                    return chosen
    finally:
        truth.close()
    raise RuntimeError(f"fewer than {count} customers without data at a manual partner in the ground truth")


# ---------------------------------------------------------------- one run


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def _log_facts(dag_id: str, run_id: str, ti: dict) -> dict:
    """From the task's log files (every attempt): did it defer, was an attempt killed, worker DAG-parse time."""
    folder = AIRFLOW_HOME / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
    if ti["map_index"] >= 0:
        folder /= f"map_index={ti['map_index']}"
    paths = [folder / f"attempt={n}.log" for n in range(1, ti["try_number"] + 1)]
    if not any(path.exists() for path in paths):
        return {}
    deferred, killed, parse_ms = False, False, 0
    for path in filter(Path.exists, paths):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            text = str(event.get("event", ""))
            deferred |= "DEFERRED" in text
            killed |= "shouldn't be running anymore" in text  # the scheduler took the try away
            parse_ms += int(event.get("dag_file_parse_ms") or 0)
    return {"deferred": deferred, "killed_attempt": killed, "worker_parse_ms": parse_ms}


def _unit(target: dict | str) -> str:
    """A gather target's unit name (system keys and groups only): ``payflow``, ``fabconnect_app.account``."""
    if isinstance(target, str):  # an XCom the API returned in a form the decoder did not undo
        found = re.search(r"['\"]system['\"]:\s*['\"]([^'\"]+)", target)
        return found.group(1) if found else target[:40]
    return f"{target['system']}.{target['group']}" if target.get("group") else target["system"]


def critical_path(graph: dict[str, list[str]], weight: dict[str, float]) -> list[str]:
    """Longest chain by summed weight (the task graph is a DAG; ties keep the first found)."""
    best: dict[str, tuple[float, list[str]]] = {}

    def longest_from(task_id: str) -> tuple[float, list[str]]:
        if task_id not in best:
            tails = [longest_from(d) for d in graph[task_id]]
            tail = max(tails, key=lambda t: t[0]) if tails else (0.0, [])
            best[task_id] = (weight.get(task_id, 0.0) + tail[0], [task_id, *tail[1]])
        return best[task_id]

    roots = [t for t in graph if not any(t in downs for downs in graph.values())]
    return max((longest_from(r) for r in roots), key=lambda t: t[0])[1]


def analyse(
    dag_id: str,
    run: dict,
    tis: list[dict],
    graph: dict[str, list[str]],
    t_trigger: float,
    t_seen: float,
    targets: list[dict] | None = None,
    fan_out_task: str = "gather",
) -> dict:
    """Figures of one finished run; ``targets`` (resolve_subject's XCom) names the gather instances."""
    names = {i: _unit(t) for i, t in enumerate(targets or [])}
    ran = [ti for ti in tis if ti["state"] != "skipped" and ti["start_date"] and ti["end_date"]]
    tasks = []
    for ti in sorted(tis, key=lambda t: (t["task_id"], t["map_index"])):
        tasks.append(
            {
                "task_id": ti["task_id"],
                "map_index": ti["map_index"],
                "label": ti["task_id"]
                + (f"[{names.get(ti['map_index'], ti['map_index'])}]" if ti["map_index"] >= 0 else ""),
                "state": ti["state"],
                "try_number": ti["try_number"],
                "duration_s": round(ti["duration"] or 0.0, 3),
                "start": ti["start_date"],
                "end": ti["end_date"],
                "queued": ti["queued_when"],
                **(_log_facts(dag_id, run["dag_run_id"], ti) if ti in ran else {}),
            }
        )
    node = {}  # task_id -> weight (longest instance), first start, last end
    for ti in ran:
        w, s, e = node.get(ti["task_id"], (0.0, float("inf"), 0.0))
        node[ti["task_id"]] = (
            max(w, ti["duration"] or 0.0),
            min(s, _ts(ti["start_date"])),
            max(e, _ts(ti["end_date"])),
        )
    path = [t for t in critical_path(graph, {t: v[0] for t, v in node.items()}) if t in node]
    critical = sum(node[t][0] for t in path)
    wall = t_seen - t_trigger
    gaps = sum(node[b][1] - node[a][2] for a, b in itertools.pairwise(path))
    spread = sum((node[t][2] - node[t][1]) - node[t][0] for t in path)
    run_end = _ts(run["end_date"]) or t_seen
    gathers = [t for t in tasks if t["task_id"] == fan_out_task and t["map_index"] >= 0]
    return {
        "dag_id": dag_id,
        "run_id": run["dag_run_id"],
        "state": run["state"],
        "wall_s": round(wall, 3),
        "server_run_s": round(run_end - _ts(run["start_date"]), 3) if run["start_date"] else None,
        "task_sum_s": round(sum(ti["duration"] or 0.0 for ti in ran), 3),
        "critical_path": path,
        "critical_task_s": round(critical, 3),
        "overhead_s": round(wall - critical, 3),
        "overhead_split_s": {
            "before_first_task": round(node[path[0]][1] - t_trigger, 3),
            "between_tasks": round(gaps, 3),
            "mapped_spread": round(spread, 3),
            "last_task_to_run_success": round(run_end - node[path[-1]][2], 3),
            "run_success_to_seen": round(t_seen - run_end, 3),
        },
        "n_targets": len(gathers),
        "fan_out": {
            "internal": sum(1 for t in targets or [] if "channel" not in t),
            "partners": sum(1 for t in targets or [] if "channel" in t),
        }
        if targets
        else None,
        "deferred_gathers": sum(1 for t in gathers if t.get("deferred")),
        "retried_tasks": [
            t["label"] + (" (attempt killed by the scheduler)" if t.get("killed_attempt") else "")
            for t in tasks
            if t["try_number"] > 1
        ],
        "worker_parse_s": round(sum(t.get("worker_parse_ms", 0) for t in tasks) / 1000, 3),
        "tasks": tasks,
    }


def wait_until_alone(api: BenchApi, mine: set[str]) -> list[str]:
    """Wait (up to RUN_TIMEOUT_SECONDS) until no other DAG has a queued or running run; returns those seen."""
    seen: set[str] = set()
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while (busy := api.busy_runs(mine)) and time.monotonic() < deadline:
        if not seen:
            print(f"waiting for runs of other DAGs to finish: {', '.join(busy)}", flush=True)
        seen |= set(busy)
        time.sleep(2)
    return sorted(seen)


def run_once(api: BenchApi, dag_id: str, conf: dict, graph: dict[str, list[str]], mine: set[str]) -> dict:
    waited_for = wait_until_alone(api, mine)
    load_before = os.getloadavg()[0]
    t_trigger = time.time()
    run_id = api.post_run(dag_id, conf)
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        run = api.run(dag_id, run_id)
        if run["state"] in ("success", "failed"):
            t_seen = time.time()
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dag_id} run {run_id} still {run['state']} after {RUN_TIMEOUT_SECONDS}s")
        time.sleep(POLL_SECONDS)
    tis = api.task_instances(dag_id, run_id)
    if run["state"] != "success":
        bad = sorted(
            f"{t['task_id']}[{t['map_index']}]={t['state']}" for t in tis if t["state"] not in ("success", "skipped")
        )
        raise RuntimeError(f"{dag_id} run {run_id} {run['state']}: {', '.join(bad)}")
    targets = None
    fan_out_task, named_by = FAN_OUT[dag_id]
    if named_by:
        try:
            targets = api.xcom(dag_id, run_id, named_by)
        except Exception as exc:
            print(f"could not read {named_by}'s XCom ({type(exc).__name__}); {fan_out_task} instances keep their index")
    facts = analyse(dag_id, run, tis, graph, t_trigger, t_seen, targets, fan_out_task)
    facts["other_dags_running_at_end"] = api.busy_runs(mine)
    facts["waited_for_other_dags"] = waited_for
    facts["loadavg_1m"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    return facts


# ---------------------------------------------------------------- report


def _med(values) -> float:
    return round(statistics.median(values), 3)


def summarize(runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    return {
        "runs": len(runs),
        "wall_s": {"median": _med(walls), "min": min(walls), "max": max(walls)},
        "task_sum_s_median": _med(r["task_sum_s"] for r in runs),
        "critical_task_s_median": _med(r["critical_task_s"] for r in runs),
        "overhead_s_median": _med(r["overhead_s"] for r in runs),
        "overhead_split_s_median": {
            k: _med(r["overhead_split_s"][k] for r in runs) for k in runs[0]["overhead_split_s"]
        },
        "task_share_median": _med(r["critical_task_s"] / r["wall_s"] for r in runs),
        "deferred_gathers_median": _med(r["deferred_gathers"] for r in runs),
        "loadavg_1m_before_median": _med(r["loadavg_1m"]["before"] for r in runs),
        "runs_with_retries": sum(1 for r in runs if r["retried_tasks"]),
        "wall_s_median_without_retries": (
            _med(r["wall_s"] for r in runs if not r["retried_tasks"])
            if any(not r["retried_tasks"] for r in runs)
            else None
        ),
        "task_median_s": _task_medians(runs),
    }


def _task_medians(runs: list[dict]) -> dict[str, float]:
    """Median duration per task label (mapped instances by their unit name or index); skipped tasks left out."""
    samples: dict[str, list[float]] = {}
    for r in runs:
        for t in r["tasks"]:
            if t["state"] == "success":
                samples.setdefault(t["label"], []).append(t["duration_s"])
    return {label: _med(v) for label, v in sorted(samples.items())}


def _by_task(medians: dict[str, float]) -> dict[str, float]:
    """Per task id: the label's median, or for a mapped task its longest instance's median."""
    out: dict[str, float] = {}
    for label, value in medians.items():
        task_id = label.split("[")[0]
        out[task_id] = max(out.get(task_id, 0.0), value)
    return out


def print_report(report: dict) -> None:
    main_dag, noop_dag, right = report["dag_id"], report["noop_dag_id"], report["right"]
    access, noop = report["summary"][main_dag], report["summary"][noop_dag]
    print(
        f"\n{'DAG':<16}{'runs':>5}  {'wall med':>9}{'min':>8}{'max':>8}  {'task sum med':>13}  "
        f"{'crit. path tasks med':>21}  {'overhead med':>13}   (s)"
    )
    for dag_id, s in report["summary"].items():
        w = s["wall_s"]
        print(
            f"{dag_id:<16}{s['runs']:>5}  {w['median']:>9.2f}{w['min']:>8.2f}{w['max']:>8.2f}  "
            f"{s['task_sum_s_median']:>13.2f}  {s['critical_task_s_median']:>21.2f}  {s['overhead_s_median']:>13.2f}"
        )
    warm = report["warmup"]
    print(
        f"warm-up (discarded): {main_dag} {warm[main_dag]['wall_s']:.2f}s, {noop_dag} {warm[noop_dag]['wall_s']:.2f}s"
    )
    print()
    for name, value in report["ratios"].items():
        print(f"{name:<58}{value:>8}")
    print(f"\noverhead split, median s ({right:>8} {'noop':>8}):")
    for key in access["overhead_split_s_median"]:
        print(f"  {key:<38}{access['overhead_split_s_median'][key]:>8.2f} {noop['overhead_split_s_median'][key]:>8.2f}")
    a_task, n_task = _by_task(access["task_median_s"]), _by_task(noop["task_median_s"])
    print(f"\nmedian duration per task, s (mapped: longest instance)  {right:>8} {'noop':>8}")
    for task_id in report["critical_path"] + sorted(set(a_task) - set(report["critical_path"])):
        print(f"  {task_id:<53}{a_task.get(task_id, 0.0):>8.2f} {n_task.get(task_id, 0.0):>8.2f}")
    print(
        f"\nslowest 3 tasks of the {right} run (median duration): "
        + "; ".join(f"{t['task']} {t['median_s']:.2f}s" for t in report["slowest_tasks"])
    )
    print(
        f"{right} fan-out: {report['n_targets']} {FAN_OUT[main_dag][0]} targets ({report['fan_out']}) "
        f"on {report['cpus']} CPUs; "
        f"partner tasks that deferred to the triggerer, median per run: {access['deferred_gathers_median']:g}"
    )
    if access["runs_with_retries"]:
        clean = access["wall_s_median_without_retries"]
        print(
            f"{access['runs_with_retries']} of {access['runs']} measured {right} runs retried a task "
            "(see 'retried_tasks' in the JSON); median wall of the others: "
            + (f"{clean:.2f}s" if clean is not None else "none")
        )
    load = statistics.median([access["loadavg_1m_before_median"], noop["loadavg_1m_before_median"]])
    print(
        f"host 1-min load average just before a run, median: {load:.1f} on {report['cpus']} CPUs (the idle demo adds "
        "some)"
        + (
            "; above the CPU count: other work competed for the CPUs, expect lower figures on a quiet host"
            if load > report["cpus"]
            else ""
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per DAG, the first being a warm-up (>= 2)")
    parser.add_argument("--right", choices=("access", "erasure"), default="access", help="the right DAG to measure")
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be at least 2 (the first run of each DAG is a warm-up)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    folder = dags_folder()
    proc = None
    try:
        proc = start_demo(folder, RESULTS / "e2e_launcher.log")
        main_dag, noop_dag = f"dsr_{args.right}", NOOP_DAGS[f"dsr_{args.right}"]
        mine = {main_dag, noop_dag}
        if args.right == "access":
            case, email = pick_subject()
            subjects = [(case, email)] * args.runs
        else:
            subjects = pick_erasure_subjects(args.runs)
            case = f"{len(subjects)} ordinary customers, one per run"
        api = BenchApi(f"http://localhost:{settings.AIRFLOW_PORT}", DEMO_USER, DEMO_PASSWORD)
        graphs = {}
        for dag_id in (main_dag, noop_dag):
            api.wait_for_dag(dag_id)
            api.unpause(dag_id)
            graphs[dag_id] = api.graph(dag_id)
        stamp = time.strftime("%Y%m%d%H%M%S")
        runs: dict[str, list[dict]] = {main_dag: [], noop_dag: []}
        for i, (_, email) in enumerate(subjects):
            conf = {
                "request_id": f"BENCH-E2E-{i}-{stamp}",
                "subject": {"email": email},
                "verification": {
                    "method": "logged_in_session",
                    "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            }
            access = run_once(api, main_dag, conf, graphs[main_dag], mine)
            noop = run_once(api, noop_dag, {"n_targets": access["n_targets"]}, graphs[noop_dag], mine)
            runs[main_dag].append(access)
            runs[noop_dag].append(noop)
            others = sorted(set(access["other_dags_running_at_end"] + noop["other_dags_running_at_end"]))
            retried = access["retried_tasks"] + noop["retried_tasks"]
            print(
                f"run {i}{' (warm-up)' if i == 0 else '':<10} {args.right} {access['wall_s']:6.2f}s "
                f"({access['n_targets']} targets, {access['deferred_gathers']} deferred)   "
                f"noop {noop['wall_s']:6.2f}s"
                + (f"   (other DAGs running: {', '.join(others)})" if others else "")
                + (f"   RETRIED: {', '.join(retried)}" if retried else ""),
                flush=True,
            )
    finally:
        if proc is not None:
            stop_demo(proc)
        for link in folder.iterdir():
            link.unlink()
        folder.rmdir()

    measured = {dag_id: r[1:] for dag_id, r in runs.items()}
    summary = {dag_id: summarize(r) for dag_id, r in measured.items()}
    access, noop = summary[main_dag], summary[noop_dag]
    last = measured[main_dag][-1]
    slowest = sorted(access["task_median_s"].items(), key=lambda kv: -kv[1])[:3]
    report = {
        "right": args.right,
        "dag_id": main_dag,
        "noop_dag_id": noop_dag,
        "runs_per_dag": args.runs,
        "warmup_runs": 1,
        "poll_seconds": POLL_SECONDS,
        "subject_case": case,
        "cpus": os.cpu_count(),
        "n_targets": last["n_targets"],
        "fan_out": (
            f"{last['fan_out']['internal']} internal units + {last['fan_out']['partners']} partners"
            if last["fan_out"]
            else "split unknown"
        ),
        "critical_path": last["critical_path"],
        "summary": summary,
        "ratios": {
            f"{args.right} / noop, median wall": round(access["wall_s"]["median"] / noop["wall_s"]["median"], 2),
            f"{args.right} / noop, median critical-path task time": round(
                access["critical_task_s_median"] / noop["critical_task_s_median"], 2
            ),
            f"{args.right}: share of wall in task durations (critical path)": access["task_share_median"],
            f"{args.right}: share of wall in Airflow scheduling (rest)": round(1 - access["task_share_median"], 3),
            "noop: share of wall in task durations (critical path)": noop["task_share_median"],
        },
        "slowest_tasks": [{"task": k, "median_s": v} for k, v in slowest],
        "warmup": {dag_id: {k: v for k, v in r[0].items() if k != "tasks"} for dag_id, r in runs.items()},
        "runs": measured,
    }
    print_report(report)
    out_name = "e2e.json" if args.right == "access" else f"e2e_{args.right}.json"
    (RESULTS / out_name).write_text(json.dumps(report, indent=2))
    print(f"\nwritten {(RESULTS / out_name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
