"""``dsr wave``: check a JSON Lines file of requests, upload it as a wave and trigger one run.

Every line is checked here first, as the DAG will check it (a JSON object, a valid request of
the right, a ``verification``, no ``request_id`` twice), so a typo is caught before anything
leaves the machine: with a bad line nothing is uploaded and the command exits 2, unless
``--send-bad-lines`` asks to let the run refuse those lines in its report. What only the run
can know (a request id the ledger holds for another subject, identities of different people)
is in the wave's report, ``_waves/<wave id>/report.json`` in the exports bucket.

Output names lines and request ids, never identities.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from include import constants
from include.dsr.cli import context, fmt
from include.dsr.cli.context import CliError, make_api
from include.dsr.core.errors import RequestValidationError, TerminalError
from include.dsr.core.pii import redact
from include.dsr.core.request import WAVE_RIGHTS, parse_request, parse_wave

MAX_PROBLEMS_SHOWN = 20


def add_parser(subparsers: argparse._SubParsersAction, api_options: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "wave",
        parents=[api_options],
        help="submit many requests of one right as one run (a wave)",
        description="Check a JSON Lines file (one run conf per line), upload it to the exports bucket "
        "as _waves/<wave id>.jsonl and trigger one run of dsr_<right> that takes every line.",
    )
    parser.add_argument("right", choices=WAVE_RIGHTS)
    parser.add_argument("file", type=Path, help="JSON Lines: one request per line, as a single run's conf")
    parser.add_argument("--wave-id", required=True, help="the wave's id, e.g. WAVE-2026-12-01 (its run and report)")
    parser.add_argument(
        "--send-bad-lines",
        action="store_true",
        help="upload even with bad lines; the run refuses them one by one in the wave's report",
    )
    parser.set_defaults(func=run)


@dataclass
class CheckedLines:
    requests: int = 0
    problems: list[str] = field(default_factory=list)


def check_lines(lines: list[str], right: str) -> CheckedLines:
    """Each line as the run will take it; problems name the line and request id, never identities."""
    checked = CheckedLines()
    seen: set[str] = set()
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            conf = json.loads(text)
        except ValueError:
            conf = None
        if not isinstance(conf, dict):
            checked.problems.append(f"line {number}: not a JSON object")
            continue
        try:
            request = parse_request(conf, right)
        except TerminalError as exc:
            checked.problems.append(f"line {number}: {redact(str(exc), _identities(conf), limit=300)}")
            continue
        if request.verification is None:
            checked.problems.append(f"line {number} ({request.request_id}): no verification (submit it on its own)")
        elif request.request_id in seen:
            checked.problems.append(f"line {number} ({request.request_id}): request_id used by an earlier line")
        else:
            seen.add(request.request_id)
            checked.requests += 1
    return checked


def _identities(conf: dict) -> list[str]:
    subject = conf.get("subject")
    return [str(value) for value in subject.values() if value] if isinstance(subject, dict) else []


def run(args: argparse.Namespace) -> int:
    """Check, upload, trigger; print the run and where the report will be."""
    from include.dsr.cli.airflow_api import AirflowApiError
    from include.dsr.cli.submit import run_id_for

    key = f"_waves/{args.wave_id}.jsonl"
    wave = parse_wave({"request_id": args.wave_id, "wave": key}, args.right)  # exit 2 on a bad id
    try:
        body = args.file.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}", exit_code=2) from None
    checked = check_lines(body.decode("utf-8", errors="replace").splitlines(), args.right)
    if checked.problems and not args.send_bad_lines:
        shown = "; ".join(checked.problems[:MAX_PROBLEMS_SHOWN])
        more = len(checked.problems) - MAX_PROBLEMS_SHOWN
        raise RequestValidationError(
            f"{len(checked.problems)} bad line(s), nothing uploaded: {shown}"
            + (f"; and {more} more" if more > 0 else "")
            + " (fix them, or pass --send-bad-lines to let the run refuse them)"
        )
    if not checked.requests:
        raise RequestValidationError(f"{args.file} holds no request")

    s3 = _s3_client()
    bucket = constants.EXPORTS_BUCKET
    if _exists(s3, bucket, key):
        raise CliError(
            f"wave {wave.wave_id} was submitted before ({key} is in {bucket}); to run it again, clear its run "
            "in Airflow; for new requests use a new --wave-id"
        )
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-ndjson")
    now = context.now_utc()
    dag_id = f"dsr_{args.right}"
    try:
        triggered = make_api(args.api_url).trigger_run(
            dag_id,
            {"request_id": wave.wave_id, "wave": key},
            run_id=run_id_for(wave.wave_id, now),
            note=f"wave of {checked.requests} requests submitted with dsr",
        )
    except AirflowApiError:
        s3.delete_object(Bucket=bucket, Key=key)  # no run will read it: leave no identities behind
        raise
    print(
        fmt.fields(
            [
                ("wave", f"{wave.wave_id} ({args.right}, {checked.requests} requests)"),
                ("bad lines", f"{len(checked.problems)} (the run refuses them)" if checked.problems else "0"),
                ("run", f"{triggered['dag_run_id']} of {dag_id} ({triggered.get('state', 'queued')})"),
                ("file", f"s3://{bucket}/{key} (deleted once every request is closed)"),
                ("report", f"s3://{bucket}/_waves/{wave.wave_id}/report.json (after intake)"),
            ]
        )
    )
    return 0


def _s3_client():
    from include.dsr.connections import s3_client

    context.demo_defaults()
    client = s3_client(constants.CONN_S3)
    context.keep_stdout_for_output()
    return client


def _exists(s3, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise CliError(f"exports bucket {bucket} not reachable: {exc}") from None
    return True
