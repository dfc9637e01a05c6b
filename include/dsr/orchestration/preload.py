"""Heavy modules imported once per worker process, not once per task.

Airflow starts every task in a process forked from a long-lived one: the LocalExecutor's
workers (forked from the scheduler) or a Celery worker's pool processes. A module imported
there before the fork is already loaded in every task process; imported in the task, it is
paid again each time (Great Expectations alone takes seconds of CPU per ``validate_results``).
``config/airflow_local_settings.py`` calls :func:`preload_for_this_process` as Airflow starts.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Sequence

PRELOAD_ENV = "DSR_PRELOAD_MODULES"  # comma-separated; "" turns preloading off
DEFAULT_MODULES = ("pandas", "boto3", "sqlalchemy", "great_expectations")


def forks_tasks(argv: Sequence[str], executor: str) -> bool:
    """Whether this Airflow process forks task processes: a Celery worker, or the scheduler of
    a LocalExecutor (its workers are forked from it). API server, dag-processor, triggerer and
    the CLI do not: they load nothing extra."""
    command = [a for a in argv[1:] if not a.startswith("-")][:2]
    if command[:2] == ["celery", "worker"]:
        return True
    return command[:1] == ["scheduler"] and "LocalExecutor" in executor


def modules_to_preload(environ: dict[str, str] | os._Environ) -> tuple[str, ...]:
    value = environ.get(PRELOAD_ENV)
    if value is None:
        return DEFAULT_MODULES
    return tuple(m.strip() for m in value.split(",") if m.strip())


def preload(modules: Sequence[str]) -> dict[str, float]:
    """Import ``modules``; seconds each took. A module that fails to import is logged and skipped
    (the task imports it itself and reports the error there)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no analytics thread before the fork
    took: dict[str, float] = {}
    for name in modules:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as exc:  # a preload must never stop Airflow from starting
            print(f"dsr: preloading {name} failed ({exc!r}); tasks will import it themselves", file=sys.stderr)
            continue
        took[name] = round(time.perf_counter() - started, 2)
    return took


def warm_s3_model() -> float | None:
    """Load the S3 service model into boto3's default session, which task processes then inherit
    and make their clients from (``connections.s3_client``): a fresh session reads and parses it
    again, 0.33 s of CPU in every task that touches the store. No network call; seconds taken,
    or None when boto3 is not loaded here."""
    if "boto3" not in sys.modules:
        return None
    started = time.perf_counter()
    try:
        import boto3

        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        # placeholder keys: the client is never used, making it loads the model (no network call)
        boto3.DEFAULT_SESSION.client(
            "s3",
            region_name="us-east-1",
            aws_access_key_id="preload",
            aws_secret_access_key="preload",  # noqa: S106
        )
    except Exception as exc:  # a preload must never stop Airflow from starting
        print(f"dsr: loading the S3 model failed ({exc!r}); tasks will load it themselves", file=sys.stderr)
        return None
    return round(time.perf_counter() - started, 2)


def preload_for_this_process(executor: str) -> dict[str, float]:
    """Preload :func:`modules_to_preload` if this process forks tasks (see :func:`forks_tasks`)."""
    if not forks_tasks(sys.argv, executor):
        return {}
    took = preload(modules_to_preload(os.environ))
    s3_model = warm_s3_model()
    if s3_model is not None:
        took["boto3 S3 model"] = s3_model
    if took:  # stderr: Airflow configures its logging only after the local settings
        print(f"dsr: preloaded for the task processes (seconds): {took}", file=sys.stderr, flush=True)
    return took
