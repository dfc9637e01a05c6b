"""Clear the identities a request brought into Airflow's metadata DB, once it is closed.

A right DAG's run conf carries the subject's identities (the DESIGN's contract: ops trigger
with an email, a phone, an account id). Airflow keeps that conf in two places: ``dag_run.conf``,
and the audit ``log`` row of the trigger (``event='trigger_dag_run'``, the whole request body in
``extra``). Everything else the product writes to Airflow (XCom, rendered fields, HITL rows,
trigger kwargs, task logs) holds ids and counts only, which the leak test
(``tests/e2e/test_metadata_db_leaks.py``) checks table by table.

:func:`purge_runs` rewrites both copies: the conf keeps ``request_id`` (the run stays traceable
to its ledger row) and says when the identities were removed; the audit row's ``extra`` says the
same. It runs

* in the ``close_request`` task of each right DAG, right after the ledger closed the request
  (``DSR_METADATA_PURGE_AFTER_DAYS`` = 0, the default), and
* in the hourly ``dsr_sla_monitor`` (:func:`sweep`), for requests closed elsewhere (refused by
  ops, closed by the CLI), when a delay is configured, and for runs that never became a ledger
  request (refused input, dry runs), once they ended that many days ago.

Open requests keep their conf: a failed run must be resumable. Tasks cannot use Airflow's own
database session (the Task SDK forbids it), so the purge reaches the metadata DB through its
own connection, ``dsr_airflow_metadata`` (an account allowed to update ``dag_run.conf`` and
``log.extra``). Plain SQLAlchemy Core on Airflow's table names; SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from include.dsr.ledger.api import Ledger

log = logging.getLogger(__name__)

CONN_METADATA = "dsr_airflow_metadata"
REDACTED_KEY = "identities_removed_at"


@dataclass(frozen=True)
class RunRef:
    """A DAG run of a right DAG whose conf still holds identities."""

    id: int
    dag_id: str
    run_id: str
    request_id: str | None
    end_date: datetime | None
    state: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("success", "failed")


def is_redacted(conf: Any) -> bool:
    return isinstance(conf, dict) and REDACTED_KEY in conf


def redacted_conf(conf: dict, now: datetime) -> dict:
    """What stays of a conf: the request id (traceability), and when the rest went."""
    return {"request_id": conf.get("request_id"), REDACTED_KEY: now.isoformat(timespec="seconds")}


def _tables(conn: Connection):
    from sqlalchemy import MetaData, Table

    meta = MetaData()
    return Table("dag_run", meta, autoload_with=conn), Table("log", meta, autoload_with=conn)


def _conf(value: Any) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def runs_with_identities(engine: Engine, dag_ids: list[str]) -> list[RunRef]:
    """Runs of ``dag_ids`` whose conf has not been redacted yet."""
    from sqlalchemy import select

    with engine.connect() as conn:
        dag_run, _ = _tables(conn)
        rows = conn.execute(
            select(
                dag_run.c.id, dag_run.c.dag_id, dag_run.c.run_id, dag_run.c.conf, dag_run.c.end_date, dag_run.c.state
            ).where(dag_run.c.dag_id.in_(dag_ids))
        )
        found = []
        for row in rows:
            conf = _conf(row.conf)
            if conf and not is_redacted(conf):
                end = row.end_date.replace(tzinfo=UTC) if row.end_date and row.end_date.tzinfo is None else row.end_date
                found.append(RunRef(row.id, row.dag_id, row.run_id, conf.get("request_id"), end, row.state))
        return found


def purge_runs(engine: Engine, runs: list[RunRef], now: datetime | None = None) -> dict[str, int]:
    """Redact the conf of ``runs`` and the audit-log rows that copied it; returns rows changed per table.

    Idempotent: a redacted conf is left alone, so a second call changes nothing.
    """
    from sqlalchemy import select, update

    now = now or datetime.now(UTC)
    changed = {"dag_run": 0, "log": 0, "callback": 0}
    if not runs:
        return changed
    with engine.begin() as conn:
        dag_run, audit = _tables(conn)
        by_dag: dict[str, set[str | None]] = {}
        for run in runs:
            conf = _conf(conn.execute(select(dag_run.c.conf).where(dag_run.c.id == run.id)).scalar_one_or_none())
            if conf and not is_redacted(conf):
                conn.execute(update(dag_run).where(dag_run.c.id == run.id).values(conf=redacted_conf(conf, now)))
                changed["dag_run"] += 1
            changed["callback"] += _purge_deadline_callbacks(conn, run.id, now)
            if run.request_id:  # a run without one has no way to be told apart in the audit log
                by_dag.setdefault(run.dag_id, set()).add(run.request_id)
        for dag_id, request_ids in by_dag.items():
            for row in _audit_rows(conn, audit, [dag_id]):
                if row.request_id in request_ids:
                    _redact_audit_row(conn, audit, row.id, row.request_id, now)
                    changed["log"] += 1
    log.info(
        "metadata DB: identities removed from %s run confs, %s audit-log rows and %s deadline callbacks",
        *changed.values(),
    )
    return changed


@dataclass(frozen=True)
class AuditRow:
    """An audit-log row of a right DAG whose ``extra`` still holds a trigger's conf."""

    id: int
    dag_id: str
    request_id: str | None
    at: datetime | None


def _audit_rows(conn: Connection, audit, dag_ids: list[str]) -> list[AuditRow]:
    from sqlalchemy import select

    found = []
    for row in conn.execute(
        select(audit.c.id, audit.c.dag_id, audit.c.dttm, audit.c.extra).where(audit.c.dag_id.in_(dag_ids))
    ):
        body = _conf(row.extra)
        if not body or is_redacted(body) or "conf" not in body:
            continue
        at = row.dttm.replace(tzinfo=UTC) if row.dttm and row.dttm.tzinfo is None else row.dttm
        found.append(AuditRow(row.id, row.dag_id, _conf(body.get("conf")).get("request_id"), at))
    return found


def _redact_audit_row(conn: Connection, audit, row_id: int, request_id: str | None, now: datetime) -> None:
    from sqlalchemy import update

    marker = {REDACTED_KEY: now.isoformat(timespec="seconds"), "request_id": request_id}
    conn.execute(update(audit).where(audit.c.id == row_id).values(extra=json.dumps(marker)))


def purge_request(
    engine: Engine, ledger: Ledger, request_id: str, dag_ids: list[str], now: datetime | None = None
) -> dict[str, int]:
    """Redact every run of a closed request and record it in the ledger (counts only)."""
    now = now or datetime.now(UTC)
    runs = [r for r in runs_with_identities(engine, dag_ids) if r.request_id == request_id]
    changed = purge_runs(engine, runs, now)
    ledger.mark_metadata_purged(request_id, now, changed)
    return changed


def sweep(
    engine: Engine, ledger: Ledger, dag_ids: list[str], after_days: float, now: datetime | None = None
) -> dict[str, int]:
    """Redact the runs of closed requests (closed ``after_days`` ago) and of runs that never
    became a request (refused input, dry runs) that ended ``after_days`` ago. Open requests wait."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=after_days)
    due: list[RunRef] = []
    closed: set[str] = set()
    for run in runs_with_identities(engine, dag_ids):
        if not run.finished:
            continue  # a running re-run still reads its conf; the next sweep takes it
        row = ledger.get_request(run.request_id) if run.request_id else None
        if row is not None and row.closed_at is not None and row.closed_at <= cutoff:
            due.append(run)
            closed.add(row.request_id)
        elif row is None and run.end_date is not None and run.end_date <= cutoff:
            due.append(run)
    changed = purge_runs(engine, due, now)
    changed["log"] += _sweep_orphan_audit_rows(engine, ledger, dag_ids, cutoff, now)
    for request_id in sorted(closed):
        ledger.mark_metadata_purged(request_id, now, {})
    return {
        **changed,
        "requests": len(closed),
        "runs_without_request": len(due) - sum(1 for r in due if r.request_id in closed),
    }


def _scrub_confs(value: Any, now: datetime) -> Any:
    """``value`` with every nested ``conf`` mapping replaced by its redacted form."""
    if isinstance(value, dict):
        return {
            k: redacted_conf(v, now)
            if k == "conf" and isinstance(v, dict) and not is_redacted(v)
            else _scrub_confs(v, now)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub_confs(v, now) for v in value]
    return value


def _purge_deadline_callbacks(conn: Connection, dag_run_id: int, now: datetime) -> int:
    """A missed Deadline Alert copies the run (conf included) into its ``callback.data``."""
    from sqlalchemy import MetaData, Table, inspect, select, update

    if not {"deadline", "callback"} <= set(inspect(conn).get_table_names()):
        return 0
    meta = MetaData()
    deadline = Table("deadline", meta, autoload_with=conn)
    callback = Table("callback", meta, autoload_with=conn)
    ids = select(deadline.c.callback_id).where(deadline.c.dagrun_id == dag_run_id)
    changed = 0
    for row in conn.execute(select(callback.c.id, callback.c.data).where(callback.c.id.in_(ids))):
        data = _conf(row.data)
        scrubbed = _scrub_confs(data, now)
        if scrubbed != data:
            value = json.dumps(scrubbed) if isinstance(row.data, str) else scrubbed
            conn.execute(update(callback).where(callback.c.id == row.id).values(data=value))
            changed += 1
    return changed


def _sweep_orphan_audit_rows(
    engine: Engine, ledger: Ledger, dag_ids: list[str], cutoff: datetime, now: datetime
) -> int:
    """Audit rows of triggers that never became a run (the API refused the conf, say), or whose
    runs are gone: redacted once older than ``cutoff`` unless their request is still open."""
    from sqlalchemy import select

    changed = 0
    with engine.begin() as conn:
        dag_run, audit = _tables(conn)
        live = {
            _conf(c).get("request_id")
            for (c,) in conn.execute(select(dag_run.c.conf).where(dag_run.c.dag_id.in_(dag_ids)))
        }
        for row in _audit_rows(conn, audit, dag_ids):
            if row.at is None or row.at > cutoff or (row.request_id and row.request_id in live):
                continue  # recent, or its run still exists (the run sweep handles it with its run)
            request = ledger.get_request(row.request_id) if row.request_id else None
            if request is not None and request.closed_at is None:
                continue
            _redact_audit_row(conn, audit, row.id, row.request_id, now)
            changed += 1
    return changed


def purge_closed_request(ledger: Ledger, request_id: str) -> dict[str, int] | None:
    """In a task that just closed ``request_id``: purge now, unless a delay leaves it to the sweep."""
    from include import constants, settings

    if settings.METADATA_PURGE_AFTER_DAYS > 0:
        return None
    try:
        return purge_request(metadata_engine(), ledger, request_id, list(constants.RIGHT_DAG_IDS))
    except Exception as exc:  # the request is closed already; failing the task would not undo that
        log.warning("metadata purge of %s failed (%s); the hourly sweep will retry it", request_id, type(exc).__name__)
        return None


def sweep_closed_requests(ledger: Ledger) -> dict[str, int]:
    """The hourly sweep of :func:`sweep` over every right DAG, with the configured delay."""
    from include import constants, settings

    return sweep(metadata_engine(), ledger, list(constants.RIGHT_DAG_IDS), settings.METADATA_PURGE_AFTER_DAYS)


def metadata_engine() -> Engine:
    """The metadata DB through the ``dsr_airflow_metadata`` connection."""
    from include.dsr.connections import engine_for

    return engine_for(CONN_METADATA)
