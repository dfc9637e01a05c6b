"""Settings read once, each with a default that makes the embedded demo work unconfigured.

Override with environment variables; real systems are reached by changing Airflow
connections (``AIRFLOW_CONN_*``), not these settings.
"""

from __future__ import annotations

import os
from pathlib import Path

from include.constants import MAX_PRESIGN_SECONDS

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Where the demo world keeps its files (SQLite databases, partner copies, ground truth).
DEMO_DIR = Path(os.environ.get("DSR_DEMO_DIR", PROJECT_ROOT / ".demo"))

# Folder of the DAG files Airflow loads (benchmarks point it at a folder with extra DAGs).
DAGS_FOLDER = Path(os.environ.get("DSR_DAGS_FOLDER", PROJECT_ROOT / "dags"))

DATA_MAP_PATH = Path(os.environ.get("DSR_DATA_MAP", PROJECT_ROOT / "include" / "config" / "data_map.yaml"))

# Demo world size and seed (DESIGN: deterministic, a few thousand subjects by default).
DEMO_SUBJECTS = int(os.environ.get("DSR_DEMO_SUBJECTS", "3000"))
DEMO_SEED = int(os.environ.get("DSR_DEMO_SEED", "20261125"))

# Ports of the embedded services started by the project.
S3_PORT = int(os.environ.get("DSR_S3_PORT", "5055"))
PARTNER_BASE_PORT = int(os.environ.get("DSR_PARTNER_BASE_PORT", "18100"))
AIRFLOW_PORT = int(os.environ.get("DSR_AIRFLOW_PORT", "8080"))
SMTP_PORT = int(os.environ.get("DSR_SMTP_PORT", "1025"))


# The embedded demo (make demo, the test suite) sets DSR_DEMO=1: only then are the public demo
# secrets below accepted. Real secrets come from Airflow Variables (dsr_erasure_hash_secret,
# dsr_fingerprint_secret), so from a secrets backend where one is configured.
def demo_mode() -> bool:
    """True in the embedded demo and the test suite (``DSR_DEMO=1``), read at each call."""
    return os.environ.get("DSR_DEMO", "").lower() in ("1", "true", "yes")


# Public values of the demo world's secrets (airflow_settings.yaml): refused outside the demo.
DEMO_ERASURE_HASH_SECRET = "demo-not-a-secret"  # noqa: S105 - public on purpose, refused outside the demo
DEMO_FINGERPRINT_SECRET = "demo-fingerprint-not-a-secret"  # noqa: S105 - public on purpose, refused outside the demo
# Secrets may also come from the environment (the Variables win).
ERASURE_HASH_SECRET = os.environ.get("DSR_ERASURE_HASH_SECRET", "")
FINGERPRINT_SECRET = os.environ.get("DSR_FINGERPRINT_SECRET", "")

# How long one HTTP call to a partner may take before it counts as a stall (seconds).
PARTNER_HTTP_TIMEOUT = float(os.environ.get("DSR_PARTNER_HTTP_TIMEOUT", "10"))
# How often a deferred wait polls a partner, and how long it waits at most before the
# partner is reported overdue (default: until the request's due date).
PARTNER_POLL_SECONDS = float(os.environ.get("DSR_PARTNER_POLL_SECONDS", "30"))
# Poll in the task for this long before deferring to the triggerer (fast partners answer here).
PARTNER_INLINE_WAIT_SECONDS = float(os.environ.get("DSR_PARTNER_INLINE_WAIT_SECONDS", "3"))
PARTNER_MAX_WAIT_SECONDS = float(os.environ.get("DSR_PARTNER_MAX_WAIT_SECONDS", "0")) or None
# SMTP connections a chunk of notices (a wave's) is sent over side by side; 1 for a relay that
# allows one connection per client.
SMTP_CONNECTIONS = max(1, int(os.environ.get("DSR_SMTP_CONNECTIONS", "4")))


# Presigned package links expire after this many seconds: at most 7 days (the DESIGN's promise,
# and SigV4's own limit), however the variable is set; at least a minute.
def package_link_seconds(raw: str | None) -> int:
    """The link lifetime from ``DSR_PACKAGE_LINK_SECONDS``, kept between a minute and 7 days."""
    return min(max(int(raw or MAX_PRESIGN_SECONDS), 60), MAX_PRESIGN_SECONDS)


PACKAGE_LINK_SECONDS = package_link_seconds(os.environ.get("DSR_PACKAGE_LINK_SECONDS"))

# The receiving controllers a portability package may be sent to (Art. 20(2)), comma-separated
# endpoint URLs: ``transmit_to`` must be one of them or a path below one, so the conf cannot
# point the worker at an internal address. Empty: no direct transmission is accepted.
RECEIVING_CONTROLLERS = tuple(
    url.strip() for url in os.environ.get("DSR_RECEIVING_CONTROLLERS", "").split(",") if url.strip()
)

# Celery queue of the fan-out tasks (gathers of internal groups and partners, partner notices):
# on the Celery stack a worker of its own serves it beside the default queue, so a wave of
# partner calls never starves the platform steps. The embedded demo's LocalExecutor ignores queues.
FANOUT_QUEUE = os.environ.get("DSR_FANOUT_QUEUE", "fanout")


# Processes that write a large wave's packages (each with its own threads): a package is mostly
# Python work, which one process's threads share a single core for. 1 keeps them in the task's process.
def _usable_cores() -> int:
    """The cores this process may run on (its affinity, which containers restrict), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


PACKAGE_PROCESSES = int(os.environ.get("DSR_PACKAGE_PROCESSES", str(min(_usable_cores(), 4))))

# Airflow retries of every DSR task (exponential backoff from this first delay).
TASK_RETRIES = int(os.environ.get("DSR_TASK_RETRIES", "3"))
TASK_RETRY_DELAY_SECONDS = float(os.environ.get("DSR_TASK_RETRY_DELAY_SECONDS", "20"))

# Days after a request closes until its identities are removed from the Airflow metadata DB
# (run conf, audit log); 0 removes them when the request closes. Runs that never became a
# request (refused input, dry runs) are cleared this long after they ended.
METADATA_PURGE_AFTER_DAYS = float(os.environ.get("DSR_METADATA_PURGE_AFTER_DAYS", "0"))


# Deliver packages as an AES-encrypted package.zip; the password is written to
# s3://<exports>/_keys/<request_id>.txt, for sending to the subject by another channel.
# On by default outside the embedded demo; DSR_ENCRYPT_PACKAGES=0 or 1 decides explicitly.
def encrypt_packages() -> bool:
    """Whether packages are delivered encrypted (read at each call, like :func:`demo_mode`)."""
    value = os.environ.get("DSR_ENCRYPT_PACKAGES", "").strip().lower()
    if value:
        return value in ("1", "true", "yes")
    return not demo_mode()


# Retention run: keys per batch (one short transaction each), and the days after which the
# product's own leftovers (staging of closed requests, dry-run reports) are removed.
RETENTION_BATCH_ROWS = int(os.environ.get("DSR_RETENTION_BATCH_ROWS", "50000"))
RETENTION_COPIES_AFTER_DAYS = float(os.environ.get("DSR_RETENTION_COPIES_AFTER_DAYS", "30"))
