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
import os
import signal
import threading
import time
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
    parent: int  # the task's process id


@dataclass
class Written:
    """The packages of a wave, in the order of its request ids, as they are written."""

    packages: Iterator[Any]
    processes: int
    # Ends the pool: the packages not started yet are dropped (call it in a ``finally``: after a
    # failure elsewhere it stops them, after success it lets the processes go).
    close: Callable[[], None]


def write_packages(
    write: Callable[[str], Any],
    ids: list[str],
    runtime: Any = None,
    s3_maker: Callable[[], Callable[[], Any] | None] | None = None,
) -> Written:
    """Start writing the packages of ``ids`` with ``write``: consume :attr:`Written.packages`,
    then call :attr:`Written.close` whatever happened.

    :param runtime: the Runtime ``write`` uses (a forked process gives it its own S3 client)
    :param s3_maker: returns a maker of new S3 clients that needs no Airflow call, or None
        (``Runtime.s3_maker``); asked only for a wave that would be forked. Without one, below
        :data:`PROCESSES_FROM` packages, or with one process configured, the packages are
        written by threads of this process.
    """
    processes = _processes_for(len(ids))
    make_s3 = s3_maker() if processes > 1 and s3_maker is not None and runtime is not None else None
    if make_s3 is None:
        pool: Executor = ThreadPoolExecutor(PACKAGE_THREADS)
        return _written(pool, pool.map(write, ids), 1)
    global _FORKED
    _FORKED = _Job(write, make_s3, runtime, os.getpid())
    was_daemon = _clear_inherited_daemon_flag()
    try:
        pool = ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context("fork"), initializer=_start_forked_process
        )
        hand_outs = [ids[i : i + PER_HAND_OUT] for i in range(0, len(ids), PER_HAND_OUT)]
        batches = pool.map(_write_in_forked_process, hand_outs)
    finally:
        _FORKED = None  # the processes forked on the first hand-out hold their copy
        if was_daemon:  # every process is forked by now (the fork context starts them all at once)
            multiprocessing.current_process()._config["daemon"] = True  # type: ignore[attr-defined]
    log.info("writing %s packages in %s processes of %s threads", len(ids), processes, PACKAGE_THREADS)
    return _written(pool, (package for batch in batches for package in batch), processes)


def _clear_inherited_daemon_flag() -> bool:
    """Let this process fork package processes although a daemonic process forked it; True if
    the flag was set (the caller puts it back once its processes are forked).

    On the CeleryExecutor a task's process is ``os.fork()``-ed by Airflow's supervisor inside a
    Celery pool process, which is daemonic, and inherits that flag: multiprocessing then refuses
    it children ("daemonic processes are not allowed to have children"). The flag guards against
    children orphaned when a daemon is killed; these end on their own when the task's process is
    gone (:func:`_end_with_parent`) and the pool is shut down with the task.
    """
    current = multiprocessing.current_process()
    if not current.daemon:
        return False
    current._config["daemon"] = False  # type: ignore[attr-defined]  # no public way
    return True


def _processes_for(count: int) -> int:
    if count < PROCESSES_FROM or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, settings.PACKAGE_PROCESSES)


def _written(pool: Executor, packages: Iterator[Any], processes: int) -> Written:
    def close() -> None:
        pool.shutdown(wait=True, cancel_futures=True)

    def in_order() -> Iterator[Any]:
        try:
            yield from packages
        finally:
            close()

    return Written(in_order(), processes, close)


def _start_forked_process() -> None:
    """In a forked process: its own S3 client, the default signal handlers (Airflow's task
    handlers ignore a TERM sent to a process other than the task's), an end when the task's
    process is gone, and no INFO lines (the task's process logs the wave's)."""
    assert _FORKED is not None, "a package process must be forked from write_packages"
    from include.dsr.connections import LazyClient

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    threading.Thread(target=_end_with_parent, args=(_FORKED.parent,), name="parent-watch", daemon=True).start()
    logging.disable(logging.INFO)
    _FORKED.runtime.s3 = LazyClient(_FORKED.make_s3)


def _end_with_parent(parent: int) -> None:
    """Exit once the task's process is gone (killed, say): nobody is left to take the packages."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _write_in_forked_process(ids: list[str]) -> list[Any]:
    assert _FORKED is not None
    with ThreadPoolExecutor(PACKAGE_THREADS) as pool:
        return list(pool.map(_FORKED.write, ids))
