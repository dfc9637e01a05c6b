"""CPU seconds per process group over a benchmark's run, and per stage of the run.

A sampler thread reads the CPU times (user + system) of named process groups every ``interval``
seconds: this process (with the children it has reaped), each service child (and its
descendants), and every PostgreSQL process on the machine (run nothing else on it meanwhile).
Afterwards :meth:`CpuUsage.between` gives a group's CPU over any window, so a run's stages (task
start and end times) get their CPU too. The figures say what bounds a run on this machine: CPU
seconds needed / cores is the shortest wall any scheduling could reach.
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from datetime import datetime

import psutil


def _cpu(processes) -> float:
    """CPU seconds (user + system) of ``processes``; one that ended meanwhile counts nothing."""
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def _tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of a process and its live descendants, each with the children it has reaped (a
    Celery worker's task processes); a descendant that ended unreaped by one of them is lost."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += sum(p.cpu_times()[:4])
        except psutil.Error:
            continue
    return total


def _postgres_cpu() -> float:
    return _cpu(p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres"))


class CpuUsage:
    """Samples CPU seconds per group while running (``with CpuUsage({...}) as cpu:``).

    :param pids: group name -> pid of a process whose tree is one group (``run`` defaults to this process)
    :param interval: seconds between samples
    """

    def __init__(self, pids: dict[str, int] | None = None, interval: float = 0.5) -> None:
        self.pids = {"run": os.getpid(), **(pids or {})}
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []  # (wall clock, group -> CPU s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-usage", daemon=True)

    def sample(self) -> dict[str, float]:
        groups = {}
        for name, pid in self.pids.items():
            try:
                proc = psutil.Process(pid)
                # the run's live children are the services, each a group of its own; the children it
                # has reaped (a wave's package processes) count in its own figure
                groups[name] = sum(proc.cpu_times()[:4]) if name == "run" else _tree_cpu(proc)
            except psutil.Error:
                groups[name] = self.samples[-1][1].get(name, 0.0) if self.samples else 0.0
        groups["postgres"] = _postgres_cpu()
        return groups

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.sample()))
            self._stop.wait(self.interval)

    def __enter__(self) -> CpuUsage:
        self.samples.append((time.time(), self.sample()))
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), self.sample()))

    def _at(self, when: float) -> dict[str, float]:
        i = min(bisect_left([t for t, _ in self.samples], when), len(self.samples) - 1)
        return self.samples[i][1]

    def between(self, start: float | datetime | None = None, end: float | datetime | None = None) -> dict[str, float]:
        """CPU seconds per group from ``start`` to ``end`` (default: the whole sampling), to the interval."""
        start = start.timestamp() if isinstance(start, datetime) else start
        end = end.timestamp() if isinstance(end, datetime) else end
        first = self._at(start) if start is not None else self.samples[0][1]
        last = self._at(end) if end is not None else self.samples[-1][1]
        return {name: round(last.get(name, 0.0) - first.get(name, 0.0), 1) for name in last}

    def summary(self, stages: dict[str, tuple[datetime, datetime]] | None = None) -> dict:
        """The whole run's CPU per group, its wall, the share of the cores it kept busy, per stage CPU."""
        wall = self.samples[-1][0] - self.samples[0][0]
        whole = self.between()
        cpu = sum(whole.values())
        cores = os.cpu_count() or 1
        out: dict = {
            "wall_s": round(wall, 1),
            "cpu_s": whole,
            "cpu_total_s": round(cpu, 1),
            "cores": cores,
            "cores_busy_share": round(cpu / (wall * cores), 2) if wall else None,
            "shortest_wall_on_these_cores_s": round(cpu / cores, 1),
        }
        if stages:
            out["stages"] = {name: self.between(s, e) for name, (s, e) in stages.items()}
        return out
