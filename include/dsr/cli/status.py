"""``dsr status <request_id>`` and ``dsr list``: what the ledger says about requests.

The package link (a presigned URL that opens the subject's data) is shown only with
``--show-link``; its expiry always. The Airflow run's state is added when the API answers;
an unreachable API does not fail ``status``, the ledger is the record.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from include.dsr.cli import context, fmt
from include.dsr.cli.context import (
    STATUS_API_TIMEOUT,
    CliError,
    deadline_in_force,
    make_api,
    open_ledger,
)
from include.dsr.ledger.schema import REQUEST_STATUSES, RIGHTS

if TYPE_CHECKING:
    from datetime import datetime

    from include.dsr.ledger.api import Ledger
    from include.dsr.ledger.schema import RequestRow


def add_parsers(subparsers: argparse._SubParsersAction, api_options: argparse.ArgumentParser) -> None:
    """Register ``status`` and ``list``."""
    status = subparsers.add_parser(
        "status",
        parents=[api_options],
        help="one request: ledger row, systems, run",
        description="Show a request's ledger row, per-system results and Airflow run.",
    )
    status.add_argument("request_id")
    status.add_argument("--show-link", action="store_true", help="print the package link itself (it opens the data)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=run_status)
    listing = subparsers.add_parser(
        "list", help="requests in the ledger, as a table", description="List requests, oldest first."
    )
    listing.add_argument("--open", action="store_true", help="only requests not closed yet")
    listing.add_argument("--status", choices=REQUEST_STATUSES, help="only requests in this ledger status")
    listing.add_argument("--right", choices=RIGHTS, help="only requests for this right")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=run_list)


def request_facts(ledger: Ledger, row: RequestRow, now: datetime) -> dict[str, Any]:
    """The row's facts with the deadline in force, days left and SLA status; never the package link."""
    from include.dsr.sla.status import days_left, request_status

    deadline = deadline_in_force(ledger, row, now)
    return {
        "request_id": row.request_id,
        "right": row.right,
        "jurisdiction": row.jurisdiction,
        "status": row.status,
        "sla_status": request_status(row, now, deadline=deadline),
        "received_at": row.received_at,
        "due_at": row.due_at,
        "extended_due_at": row.extended_due_at,
        "extension_reason": row.extension_reason,
        "deadline": deadline,
        "days_left": days_left(row, now, deadline=deadline),
        "closed_at": row.closed_at,
        "outcome_summary": row.outcome_summary,
        "dag_run_id": row.dag_run_id,
        "package_link_expires_at": row.package_url_expires_at,
    }


def _airflow_run(args: argparse.Namespace, row: RequestRow) -> dict[str, Any]:
    from include.dsr.cli.airflow_api import AirflowApiError

    if not row.dag_run_id:
        return {"state": None, "error": "no run id recorded"}
    dag_id = f"dsr_{row.right}"
    try:
        run = make_api(args.api_url, timeout=STATUS_API_TIMEOUT).get_run(dag_id, row.dag_run_id)
    except AirflowApiError as exc:
        return {"dag_id": dag_id, "run_id": row.dag_run_id, "state": None, "error": str(exc)}
    return {"dag_id": dag_id, "run_id": row.dag_run_id, "state": run.get("state"), "error": None}


def _not_in_ledger(args: argparse.Namespace) -> int:
    """A request submitted but not started yet has a run and no ledger row: say so, else fail."""
    from include.dsr.cli.airflow_api import AirflowApiError

    try:
        runs = make_api(args.api_url, timeout=STATUS_API_TIMEOUT).find_runs("dsr_", args.request_id)
    except AirflowApiError as exc:
        raise CliError(
            f"request {args.request_id!r} is not in the ledger, and no Airflow run could be looked up ({exc})"
        ) from exc
    runs = [r for r in runs if (r.get("conf") or {}).get("request_id") == args.request_id]
    if not runs:
        raise CliError(
            f"request {args.request_id!r} is not in the ledger and no Airflow run carries it: "
            "check the id with `dsr list`"
        )
    if args.json:
        print(
            fmt.to_json(
                {
                    "request_id": args.request_id,
                    "in_ledger": False,
                    "airflow_runs": [
                        {"dag_id": r["dag_id"], "run_id": r["dag_run_id"], "state": r["state"]} for r in runs
                    ],
                }
            )
        )
        return 0
    for run in runs:
        print(
            f"request {args.request_id} is not in the ledger yet: run {run['dag_run_id']} of {run['dag_id']} is "
            f"{run['state']} (the run records the request when it starts)"
        )
    return 0


def run_status(args: argparse.Namespace) -> int:
    """Print one request."""
    now = context.now_utc()
    with open_ledger() as ledger:
        row = ledger.get_request(args.request_id)
        if row is None:
            return _not_in_ledger(args)
        facts = request_facts(ledger, row, now)
        systems = ledger.system_results(args.request_id)
    airflow = _airflow_run(args, row)
    if args.show_link:
        facts["package_link"] = row.package_uri
    if args.json:
        facts["systems"] = [
            {
                "system": s.system,
                "action": s.action,
                "status": s.status,
                "record_count": s.record_count,
                "outcome": s.outcome,
                "updated_at": s.updated_at,
            }
            for s in systems
        ]
        print(fmt.to_json({**facts, "airflow_run": airflow}))
        return 0
    print(fmt.fields(_status_lines(facts, row, airflow, args.show_link)))
    print()
    rows = [(s.system, s.action, s.status, s.record_count, s.outcome) for s in systems]
    print(fmt.table(("system", "action", "status", "count", "outcome"), rows) if rows else "no system results yet")
    return 0


def _status_lines(facts: dict, row: RequestRow, airflow: dict, show_link: bool) -> list[tuple[str, Any]]:
    extended = (
        f"{fmt.when(row.extended_due_at)} (reason: {fmt.cell(row.extension_reason)})" if row.extended_due_at else None
    )
    days = "closed" if row.closed_at else f"{facts['days_left']} days left"
    if row.package_url_expires_at is None:
        package = None
    elif show_link:
        package = f"{row.package_uri} (expires {fmt.when(row.package_url_expires_at)})"
    else:
        package = f"link expires {fmt.when(row.package_url_expires_at)} (--show-link prints it)"
    if airflow["state"]:
        run = f"{airflow['run_id']} of {airflow['dag_id']}: {airflow['state']}"
    else:
        run = f"{row.dag_run_id or '-'}: state unknown ({airflow['error']})"
    return [
        ("request", f"{row.request_id} ({row.right}, {row.jurisdiction})"),
        ("status", f"{row.status} (SLA: {facts['sla_status']})"),
        ("received", fmt.when(row.received_at)),
        ("due", fmt.when(row.due_at)),
        ("extended due", extended),
        ("effective due", f"{fmt.when(facts['deadline'])} ({days})"),
        ("closed", fmt.when(row.closed_at)),
        ("outcome", row.outcome_summary),
        ("package", package),
        ("airflow run", run),
    ]


def run_list(args: argparse.Namespace) -> int:
    """Print the requests matching the filters."""
    now = context.now_utc()
    with open_ledger() as ledger:
        rows = [
            r
            for r in ledger.list_requests(status=args.status, open_only=args.open)
            if args.right is None or r.right == args.right
        ]
        facts = [request_facts(ledger, row, now) for row in rows]
    if args.json:
        print(fmt.to_json(facts))
        return 0
    if not facts:
        print("no requests match")
        return 0
    table_rows = [
        (
            f["request_id"],
            f["right"],
            f["status"],
            f["sla_status"],
            fmt.day(f["received_at"]),
            fmt.day(f["deadline"]),
            "-" if f["closed_at"] else f["days_left"],
            fmt.day(f["closed_at"]),
        )
        for f in facts
    ]
    print(fmt.table(("request_id", "right", "status", "sla", "received", "due", "days left", "closed"), table_rows))
    return 0
