"""The ``dsr`` command line: parser, dispatch and the one-line errors.

Exit codes: 0 done; 1 failed (Airflow unreachable, credentials or token refused, unknown
request, extension refused, broken ledger chain); 2 bad input (usage, a request refused by
validation before anything was sent).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from include.dsr.cli import extend, holds, records, status, submit, wave
from include.dsr.cli.context import CliError, default_api_url
from include.dsr.core.errors import DSRError, RequestValidationError

PROG = "dsr"
EXAMPLES = """examples:
  dsr submit access --email maria.lopez@example.com --verified-by logged_in_session
  dsr status DSR-20261125-1a2b3c
  dsr list --open
  dsr extend DSR-20261125-1a2b3c --reason "complex request across 6 partners"
  dsr wave erasure requests.jsonl --wave-id WAVE-2026-12-01
  dsr ledger verify
  dsr evidence DSR-20261125-1a2b3c --out evidence/
"""


def build_parser() -> argparse.ArgumentParser:
    """The parser with every command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Ops CLI of Fabconnect DSR: submit requests, follow them, export evidence.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    api_options = argparse.ArgumentParser(add_help=False)
    api_options.add_argument(
        "--api-url",
        default=default_api_url(),
        help="Airflow API base URL (env DSR_API_URL, default %(default)s); auth: env DSR_API_TOKEN, or "
        "DSR_API_USER / DSR_API_PASSWORD (demo: admin/admin)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    submit.add_parser(commands, api_options)
    status.add_parsers(commands, api_options)
    extend.add_parser(commands, api_options)
    wave.add_parser(commands, api_options)
    records.add_parsers(commands)
    holds.add_parsers(commands)
    return parser


def _error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader stopped early (`dsr list --json | head`): stop quietly, as `ls | head` does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a process the pipe closed on
    except RequestValidationError as exc:
        _error(str(exc))
        return 2
    except CliError as exc:
        _error(str(exc))
        return exc.exit_code
    except DSRError as exc:
        _error(str(exc))
        return 1
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        _error(f"cannot use the ledger (connection dsr_ledger): {reason}: check AIRFLOW_CONN_DSR_LEDGER")
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
