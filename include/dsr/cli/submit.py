"""``dsr submit <right>``: validate a request locally, then trigger ``dsr_<right>`` through the REST API.

The conf is checked with :func:`include.dsr.core.request.parse_request` first, so bad input
is refused before anything is sent. The SLA clock starts at ``--received-at`` (default:
now, fixed in the conf so the printed due date is the one the run records). The subject's
email and phone are sent in the conf and never printed, not even inside an error message.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import sys
from datetime import datetime
from pathlib import Path

from include.dsr.cli import context, fmt
from include.dsr.cli.context import CliError, make_api
from include.dsr.core.request import (
    JURISDICTIONS,
    RESTRICTION_ACTIONS,
    VERIFICATION_METHODS,
    WAVE_RIGHTS,
    is_wave,
    parse_request,
    parse_wave,
    subject_of,
)
from include.dsr.sla import deadlines as sla

RIGHTS = ("access", "portability", "erasure", "restriction", "rectification", "objection")
REDACTED = "<redacted>"
_EMAIL_LIKE = re.compile(r"[\w.+%-]+@[\w-]+(\.[\w-]+)+")


def add_parser(subparsers: argparse._SubParsersAction, api_options: argparse.ArgumentParser) -> None:
    """Register ``submit``."""
    parser = subparsers.add_parser(
        "submit",
        parents=[api_options],
        help="trigger a request's DAG run through the Airflow REST API",
        description="Validate a data-subject request and trigger the DAG dsr_<right> for it.",
    )
    parser.add_argument("right", choices=RIGHTS, help="the right invoked")
    parser.add_argument("--email", help="the subject's email address (never printed)")
    parser.add_argument("--phone", help="the subject's phone number, international format (never printed)")
    parser.add_argument("--account-id", help="the subject's platform account id")
    parser.add_argument("--request-id", help="idempotency key; default DSR-<YYYYMMDD>-<6 hex>")
    parser.add_argument("--received-at", help="ISO-8601 time the request arrived (the SLA clock); default now")
    parser.add_argument(
        "--verified-by",
        choices=VERIFICATION_METHODS,
        help="how the identity was verified (now); without it the run waits for ops to confirm",
    )
    parser.add_argument("--jurisdiction", choices=JURISDICTIONS, default="GDPR")
    parser.add_argument("--action", choices=RESTRICTION_ACTIONS, help="restriction only: apply or lift")
    parser.add_argument("--transmit-to", help="portability only: the receiving controller's endpoint URL")
    parser.add_argument(
        "--correct",
        action="append",
        metavar="FIELD[@ROW]=VALUE",
        help="rectification only, repeatable: e.g. accounts.email=new@example.com, addresses.city@17=Köln "
        "(the value is never printed)",
    )
    parser.add_argument(
        "--purpose",
        action="append",
        help="objection only, repeatable: a data-map purpose objected to (marketing, pricing, ...)",
    )
    parser.add_argument("--dry-run", action="store_true", help="run without side effects on the systems")
    parser.add_argument(
        "--conf",
        type=Path,
        metavar="FILE",
        help="the whole run conf as a JSON file (as an intake form exports it, or '-' for stdin) instead of "
        "the options above; checked the same way before anything is sent",
    )
    parser.set_defaults(func=run)


#: The options that build a conf; ``--conf`` gives the whole conf instead.
CONF_OPTIONS = (
    "email",
    "phone",
    "account_id",
    "request_id",
    "received_at",
    "verified_by",
    "action",
    "transmit_to",
    "correct",
    "purpose",
    "dry_run",
)


def conf_from_file(path: Path) -> dict:
    """The run conf of ``--conf``: a JSON object, read from the file or stdin."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--conf {path}: cannot be read ({type(exc).__name__})") from None
    try:
        conf = json.loads(text)
    except ValueError as exc:
        raise CliError(f"--conf {path}: not JSON (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(conf, dict):
        raise CliError(f"--conf {path}: must hold one JSON object, the run conf")
    return conf


def new_request_id(now: datetime) -> str:
    """``DSR-YYYYMMDD-<6 hex>``."""
    return f"DSR-{now:%Y%m%d}-{secrets.token_hex(3)}"


def _utc_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_conf(args: argparse.Namespace, now: datetime) -> dict:
    """The run conf from the arguments (only the keys given)."""
    subject = {
        key: value
        for key, value in (("email", args.email), ("phone", args.phone), ("account_id", args.account_id))
        if value
    }
    if subject.get("account_id", "").isdigit():
        subject["account_id"] = int(subject["account_id"])
    conf: dict = {
        "request_id": args.request_id or new_request_id(now),
        "subject": subject,
        "received_at": args.received_at or _utc_text(now),
        "jurisdiction": args.jurisdiction,
    }
    if args.verified_by:
        conf["verification"] = {"method": args.verified_by, "verified_at": _utc_text(now)}
    if args.dry_run:
        conf["dry_run"] = True
    if args.action:
        conf["action"] = args.action
    if args.transmit_to:
        conf["transmit_to"] = args.transmit_to
    if args.correct:
        conf["corrections"] = [_correction(item) for item in args.correct]
    if args.purpose:
        conf["purposes"] = list(args.purpose)
    return conf


def _correction(item: str) -> dict:
    """``FIELD[@ROW]=VALUE`` as a correction of the run conf."""
    name, sep, value = item.partition("=")
    field, _, row = name.strip().partition("@")
    if not sep or not field:
        raise CliError("--correct takes FIELD=VALUE or FIELD@ROW=VALUE, e.g. accounts.email=new@example.com")
    correction: dict = {"field": field, "value": value}
    if row:
        if not row.isdigit():
            raise CliError(f"--correct {field}@ROW: ROW is the row's id, a number")
        correction["row_id"] = int(row)
    return correction


def redact(text: str, subject: dict) -> str:
    """``text`` with the subject's identity values and anything email-like replaced (API errors may echo the conf)."""
    for value in subject.values():
        if str(value).strip():
            text = re.sub(re.escape(str(value).strip()), REDACTED, text, flags=re.IGNORECASE)
    return _EMAIL_LIKE.sub(REDACTED, text)


def _corrections(conf: dict) -> list[dict]:
    found = conf.get("corrections")
    return [c for c in found if isinstance(c, dict) and "value" in c] if isinstance(found, list) else []


def run_id_for(request_id: str, now: datetime) -> str:
    """``dsr__<request_id>__<UTC time>``: readable in the UI, unique per submission."""
    return f"dsr__{request_id}__{now:%Y%m%dT%H%M%SZ}"


def run(args: argparse.Namespace) -> int:
    """Validate, trigger, print the run id and the due date."""
    now = context.now_utc()
    if args.conf is not None:
        given = [f"--{name.replace('_', '-')}" for name in CONF_OPTIONS if getattr(args, name) not in (None, False)]
        if given:
            raise CliError(f"--conf gives the whole conf: leave out {', '.join(given)}")
        conf = conf_from_file(args.conf)
    else:
        conf = build_conf(args, now)
    if (
        is_wave(conf) and args.right in WAVE_RIGHTS
    ):  # a wave already uploaded (``dsr wave`` uploads and checks its lines too)
        wave = parse_wave(conf, args.right)  # RequestValidationError: exit 2, nothing sent
        dag, run = _trigger(args.api_url, args.right, conf, wave.wave_id, now)
        print(fmt.fields([("wave", f"{wave.wave_id} ({args.right})"), ("run", f"{run['dag_run_id']}")]))
        return _paused_note(dag, args.right)
    request = parse_request(conf, args.right, now=now)  # RequestValidationError: exit 2, nothing sent
    dag, run = _trigger(args.api_url, args.right, conf, request.request_id, now)
    due = sla.due_at(request.received_at, request.jurisdiction, right=request.right)
    print(
        fmt.fields(
            [
                ("request", f"{request.request_id} ({args.right}, {request.jurisdiction})"),
                ("run", f"{run['dag_run_id']} of {dag['dag_id']} ({run.get('state', 'queued')})"),
                ("received", fmt.when(request.received_at)),
                ("due", fmt.when(due)),
                (
                    "identity",
                    request.verification.method if request.verification else "to be confirmed by ops in the run",
                ),
            ]
        )
    )
    return _paused_note(dag, args.right)


def _trigger(api_url: str | None, right: str, conf: dict, request_id: str, now: datetime) -> tuple[dict, dict]:
    """Trigger ``dsr_<right>``; returns the DAG and the run. Errors never quote the conf's identities."""
    from include.dsr.cli.airflow_api import AirflowApiError, ApiNotFoundError

    dag_id = f"dsr_{right}"
    api = make_api(api_url)
    try:
        dag = api.get_dag(dag_id)
        run = api.trigger_run(dag_id, conf, run_id=run_id_for(request_id, now), note="submitted with dsr")
    except ApiNotFoundError as exc:
        raise CliError(
            f"DAG {dag_id} is not in Airflow at {api.base_url}: it is not deployed or not parsed yet "
            "(wait for the dag-processor, or check `airflow dags list-import-errors`)"
        ) from exc
    except AirflowApiError as exc:
        values = {**subject_of(conf), **{f"c{i}": c["value"] for i, c in enumerate(_corrections(conf))}}
        raise type(exc)(redact(str(exc), values), exc.status) from exc
    return {"dag_id": dag_id, **dag}, run


def _paused_note(dag: dict, right: str) -> int:
    if dag.get("is_paused"):
        print(
            f"note: dsr_{right} is paused: the run waits until it is unpaused (UI toggle, or "
            f"`airflow dags unpause dsr_{right}`)"
        )
    return 0
