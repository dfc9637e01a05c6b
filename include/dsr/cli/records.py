"""``dsr ledger verify`` (the hash chain) and ``dsr evidence <request_id>`` (the regulator bundle)."""

from __future__ import annotations

import argparse
from pathlib import Path

from include.dsr.cli import context, fmt
from include.dsr.cli.context import CliError, open_ledger, require_request


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ledger verify`` and ``evidence``."""
    ledger = subparsers.add_parser("ledger", help="ledger maintenance", description="Ledger maintenance.")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", metavar="COMMAND", required=True)
    verify = ledger_commands.add_parser(
        "verify",
        help="verify the event log's hash chain",
        description="Recompute every event hash; exit 1 at the first broken link.",
    )
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(func=run_verify)
    evidence = subparsers.add_parser(
        "evidence",
        help="export one request's evidence bundle (JSON + Markdown)",
        description="Write evidence-<request_id>.json and .md for a regulator.",
    )
    evidence.add_argument("request_id")
    evidence.add_argument("--out", type=Path, default=Path("."), help="directory to write to (default: here)")
    evidence.set_defaults(func=run_evidence)


def run_verify(args: argparse.Namespace) -> int:
    """Print ok + count + head, or the first broken link (exit 1)."""
    with open_ledger() as ledger:
        report = ledger.verify_chain()
    if args.json:
        print(
            fmt.to_json(
                {
                    "ok": report.ok,
                    "events_checked": report.checked,
                    "head_seq": report.last_seq,
                    "head_hash": report.last_hash,
                    "first_broken_seq": report.first_broken_seq,
                    "reason": report.reason,
                }
            )
        )
        return 0 if report.ok else 1
    if not report.ok:
        good = f"last good seq {report.last_seq}" if report.last_seq else "no good event before it"
        raise CliError(f"ledger chain BROKEN at seq {report.first_broken_seq}: {report.reason} ({good})")
    if report.last_seq is None:
        print("ledger ok: 0 events (empty chain)")
    else:
        print(f"ledger ok: {report.checked} events verified, head seq {report.last_seq} hash {report.last_hash}")
    return 0


def run_evidence(args: argparse.Namespace) -> int:
    """Write the bundle; exit 1 (files still written) when the chain does not verify."""
    from include.dsr.evidence.bundle import build_evidence, write_bundle

    now = context.now_utc()
    with open_ledger() as ledger:
        require_request(ledger, args.request_id)
        bundle = build_evidence(ledger, args.request_id, now=now)
    json_path, md_path = write_bundle(bundle, args.out)
    chain = bundle["chain"]
    print(f"evidence for {args.request_id}: {len(bundle['events'])} events, {len(bundle['actions'])} system actions")
    print(f"  {json_path}\n  {md_path}")
    if not chain["ok"]:
        raise CliError(f"evidence written, but the ledger chain does not verify: {chain['reason']}")
    print(f"ledger chain verified: {chain['events_checked']} events, head seq {chain['head_seq']}")
    return 0
