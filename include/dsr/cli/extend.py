"""``dsr extend <request_id> --reason ...``: extend the deadline and notify the subject.

GDPR Art. 12(3): the deadline may be extended by two further months (due = received + 3
months, same calendar rules; CCPA: 45 more days) once, only with reasons, before the
first deadline, and the subject must be told, with the reasons, before that deadline.
:func:`include.dsr.sla.rules.extend_request` applies the rules, then sends the notice
(:meth:`include.dsr.notify.notices.Notices.extension`, SMTP through ``dsr_smtp``), then records
the extension: a refused extension sends nothing, a failed notice records nothing.

The subject's address is read from the request's Airflow run conf through the REST API,
or given with ``--email``; it is used to send, never printed or stored.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from include.dsr.cli import context, fmt
from include.dsr.cli.context import CliError, make_api, open_ledger, require_request

if TYPE_CHECKING:
    from datetime import datetime

    from include.dsr.ledger.api import EventRow, Ledger, RequestRow


def add_parser(subparsers: argparse._SubParsersAction, api_options: argparse.ArgumentParser) -> None:
    """Register ``extend``."""
    parser = subparsers.add_parser(
        "extend",
        parents=[api_options],
        help="extend a request's deadline (with a reason, before the first one)",
        description="Extend the deadline (due = received + 3 months; CCPA: +45 days) and send the extension "
        "notice to the subject.",
    )
    parser.add_argument("request_id")
    parser.add_argument(
        "--reason",
        required=True,
        help="why more time is needed (complexity, number of requests); sent to the subject, no personal data",
    )
    parser.add_argument(
        "--email", help="send the notice to this address instead of the one in the run conf (never printed or stored)"
    )
    parser.set_defaults(func=run)


def _recipient_from_run(args: argparse.Namespace, row: RequestRow) -> str:
    """The subject's address from the request's DAG run conf."""
    from include.dsr.cli.airflow_api import AirflowApiError
    from include.dsr.notify.notices import recipient_from_conf

    if not row.dag_run_id:
        raise CliError(f"request {row.request_id} has no Airflow run recorded: give the subject's address with --email")
    try:
        conf = make_api(args.api_url).get_run(f"dsr_{row.right}", row.dag_run_id).get("conf") or {}
    except AirflowApiError as exc:
        raise CliError(
            f"cannot read the subject's address from run {row.dag_run_id}: {exc}; or give it with --email"
        ) from exc
    return recipient_from_conf(conf, row.request_id)


def _notice_sender(args: argparse.Namespace, ledger: Ledger, reason: str):
    def send(row: RequestRow, new_due: datetime) -> EventRow:
        from include.dsr.notify.notices import Notices

        recipient = args.email or _recipient_from_run(args, row)
        return Notices(ledger, clock=context.now_utc).extension(row.request_id, recipient, new_due, reason)

    return send


def run(args: argparse.Namespace) -> int:
    """Check the rules, send the notice, record the extension, print the new due date."""
    from include.dsr.sla.rules import extend_request, extension_notice, first_deadline

    now = context.now_utc()
    reason = args.reason.strip()
    with open_ledger() as ledger:
        row = require_request(ledger, args.request_id)
        already = row.extended_due_at is not None and row.extension_reason == reason
        # ExtensionRefusedError (no reason, closed, extended, first deadline passed): exit 1, nothing sent
        row = extend_request(ledger, args.request_id, reason, now, _notice_sender(args, ledger, reason))
        events = ledger.events(args.request_id)
    notice = extension_notice(events)
    print(
        fmt.fields(
            [
                ("request", f"{row.request_id} ({'already extended' if already else 'extended'})"),
                ("first due", fmt.when(first_deadline(row, events, now))),
                ("new due", fmt.when(row.extended_due_at)),
                ("reason", row.extension_reason),
                (
                    "notice",
                    f"sent {fmt.when(notice.created_at)} (message {notice.payload.get('message_id')})"
                    if notice
                    else "not recorded",
                ),
            ]
        )
    )
    return 0
