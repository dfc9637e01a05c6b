"""Writing a wave's packages side by side: threads in this process, and, for a large wave on a
machine with more than one core, forked processes that each run their own threads.

A package is mostly Python work (frames to JSON and CSV, the report, the zip), which the threads
of one process share a single core for; forked processes share the machine's. They start with
everything this process holds (the data map, the wave's staged rows, the ledger rows read for
it) and no import to pay; each makes its own S3 client, since a client's open connections cannot
serve two processes. They only write to the object store: every ledger write stays in this
process, in order, and so does every log line but a child's warnings.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from include import settings

log = logging.getLogger(__name__)

#: A wave's packages written at once per process (each is a few object-store round trips).
PACKAGE_THREADS = 8
#: Below this many packages one process writes them: forking costs more than it saves.
PROCESSES_FROM = 200
#: Packages a forked process is handed at a time (results come back a batch at a time).
PER_HAND_OUT = 25

# What a forked process writes with: set before the pool forks, inherited by its processes.
_FORKED: _Job | None = None


@dataclass
class _Job:
    write: Callable[[str], Any]  # request id -> its package
    make_s3: Callable[[], Any]  # a new S3 client, without asking Airflow for the connection
    runtime: Any  # the Runtime whose client each forked process replaces with its own


@dataclass
class Written:
    """The packages of a wave, in the order of its request ids, as they are written."""

    packages: Iterator[Any]
    processes: int
    cancel: Callable[[], None]  # stops the packages not started yet (a failure elsewhere)


def write_packages(
    write: Callable[[str], Any], ids: list[str], runtime: Any = None, make_s3: Callable[[], Any] | None = None
) -> Written:
    """Start writing the packages of ``ids`` with ``write``; use it as a context manager's body
    would: consume :attr:`Written.packages`, call :attr:`Written.cancel` on any failure.

    :param runtime: / :param make_s3: the Runtime ``write`` uses and a maker of new S3 clients;
        without them (or below :data:`PROCESSES_FROM` packages, or with one process configured)
        the packages are written by threads of this process
    """
    processes = _processes_for(len(ids), make_s3 is not None and runtime is not None)
    if processes <= 1:
        pool: Executor = ThreadPoolExecutor(PACKAGE_THREADS)
        return _written(pool, pool.map(write, ids), 1)
    global _FORKED
    assert make_s3 is not None  # _processes_for forks only with a maker of clients
    _FORKED = _Job(write, make_s3, runtime)
    try:
        pool = ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context("fork"), initializer=_start_forked_process
        )
        hand_outs = [ids[i : i + PER_HAND_OUT] for i in range(0, len(ids), PER_HAND_OUT)]
        batches = pool.map(_write_in_forked_process, hand_outs)
    finally:
        _FORKED = None  # the processes forked on the first hand-out hold their copy
    log.info("writing %s packages in %s processes of %s threads", len(ids), processes, PACKAGE_THREADS)
    return _written(pool, (package for batch in batches for package in batch), processes)


def _processes_for(count: int, can_fork: bool) -> int:
    if not can_fork or count < PROCESSES_FROM or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, settings.PACKAGE_PROCESSES)


def _written(pool: Executor, packages: Iterator[Any], processes: int) -> Written:
    def cancel() -> None:
        pool.shutdown(wait=True, cancel_futures=True)

    def in_order() -> Iterator[Any]:
        try:
            yield from packages
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    return Written(in_order(), processes, cancel)


def _start_forked_process() -> None:
    """In a forked process: its own S3 client, and no INFO lines (the parent logs the wave's)."""
    assert _FORKED is not None, "a package process must be forked from write_packages"
    from include.dsr.connections import LazyClient

    logging.disable(logging.INFO)
    _FORKED.runtime.s3 = LazyClient(_FORKED.make_s3)


def _write_in_forked_process(ids: list[str]) -> list[Any]:
    assert _FORKED is not None
    with ThreadPoolExecutor(PACKAGE_THREADS) as pool:
        return list(pool.map(_FORKED.write, ids))
