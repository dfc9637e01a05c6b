"""``dsr hold add | list | release``: the legal holds the retention run honours.

A subject hold names an ``--account-id`` or an ``--email`` (never stored: its keyed hash is, and
the accounts holding it are found in the platform DB so their rows are held too); a collection
hold names ``--collection`` (of ``--system``, default the platform DB). Each add and release is
an event of the ledger's chain. The email is never printed.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime, timedelta

from include.dsr.cli import context, fmt
from include.dsr.cli.context import CliError, open_ledger


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    hold = subparsers.add_parser(
        "hold", help="legal holds the retention run honours", description="Place, list and release legal holds."
    )
    commands = hold.add_subparsers(dest="hold_command", metavar="COMMAND", required=True)
    add = commands.add_parser("add", help="place a hold on a subject or a collection")
    who = add.add_mutually_exclusive_group(required=True)
    who.add_argument("--account-id", type=int, help="the subject's platform account id")
    who.add_argument("--email", help="the subject's email (its keyed hash is stored, never the address)")
    who.add_argument("--collection", help="a whole collection, e.g. support_tickets")
    add.add_argument("--system", default="fabconnect_app", help="the collection's system (default fabconnect_app)")
    add.add_argument("--reason", required=True, help="the legal basis, e.g. 'litigation 2026-123'")
    add.add_argument("--until", help="end date (YYYY-MM-DD); default: until released")
    add.set_defaults(func=run_add)
    listing = commands.add_parser("list", help="holds in force (--all: released and ended ones too)")
    listing.add_argument("--all", action="store_true")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=run_list)
    release = commands.add_parser("release", help="release a hold")
    release.add_argument("hold_id")
    release.set_defaults(func=run_release)


def _until(text: str | None) -> datetime | None:
    """The end of the day named (in the controller's time zone): a hold "until 31 December" holds
    through that day."""
    from datetime import date, time

    from include.dsr.core.calendar import CONTROLLER_TZ

    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise CliError("--until takes a date, YYYY-MM-DD") from None
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=CONTROLLER_TZ).astimezone(UTC)


def _account_email(account_id: int) -> str | None:
    """The account's email, so rows keyed by it alone (chats, mails) are held with the account."""
    from sqlalchemy import column, select, table

    from include import constants
    from include.dsr.connections import engine_for

    accounts = table("accounts", column("id"), column("email"))
    with engine_for(constants.CONN_APP_DB).connect() as conn:
        found = conn.execute(select(accounts.c.email).where(accounts.c.id == account_id)).scalar()
    return str(found) if found else None


def _subject(email: str) -> tuple[list[int], str]:
    """The accounts holding ``email`` and the hold's keyed hash of it."""
    from include import constants
    from include.dsr.connections import engine_for, secret
    from include.dsr.core.data_map import load_data_map
    from include.dsr.core.identities import normalize_email
    from include.dsr.identity.resolver import IdentityResolver, SubjectQuery
    from include.dsr.retention.purge import email_hold_hash

    normal = normalize_email(email)
    if not normal or "@" not in normal:
        raise CliError("--email is not an email address")
    key = secret("erasure_hash")
    (subject,) = IdentityResolver(engine_for(constants.CONN_APP_DB), load_data_map(), key).resolve(
        [SubjectQuery("hold", email=normal)]
    )
    return sorted(subject.account_ids), email_hold_hash(normal, key)


def _known_collection(system: str, collection: str) -> None:
    from include.dsr.core.data_map import load_data_map

    try:
        load_data_map().system(system).collection(collection)
    except KeyError:
        raise CliError(f"{system}.{collection} is not a collection of the data map") from None


def run_add(args: argparse.Namespace) -> int:
    from include.dsr.core.errors import TerminalError
    from include.dsr.ledger.holds import COLLECTION, SUBJECT, LegalHolds

    now = context.now_utc()
    with open_ledger() as ledger:
        try:
            if args.collection:
                _known_collection(args.system, args.collection)
                placed = LegalHolds(ledger).add(
                    COLLECTION,
                    args.reason,
                    getpass.getuser(),
                    args.system,
                    args.collection,
                    until=_until(args.until),
                    now=now,
                )
            else:
                if args.account_id is not None:
                    email = _account_email(args.account_id)
                    accounts, digest = [args.account_id], (_subject(email)[1] if email else None)
                else:
                    accounts, digest = _subject(args.email)
                placed = LegalHolds(ledger).add(
                    SUBJECT, args.reason, getpass.getuser(), account_ids=accounts, key_hash=digest,
                    until=_until(args.until), now=now,
                )  # fmt: skip
        except TerminalError as exc:
            raise CliError(str(exc)) from exc
    for hold in placed:
        what = f"collection {hold.system}.{hold.collection}" if hold.collection else (
            f"account {hold.account_id}" if hold.account_id else "subject (by email, no account)"
        )  # fmt: skip
        through = fmt.day(hold.until - timedelta(seconds=1)) if hold.until else "released"
        print(f"hold {hold.hold_id} placed on {what} through {through}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from include.dsr.ledger.holds import LegalHolds

    with open_ledger() as ledger:
        holds = LegalHolds(ledger).list(None if args.all else context.now_utc())
    rows = [
        {
            "hold_id": h.hold_id,
            "scope": h.scope,
            "on": f"{h.system}.{h.collection}" if h.collection else (h.account_id or "email"),
            "reason": h.reason,
            "until": fmt.iso(h.until),
            "placed": fmt.iso(h.created_at),
            "released": fmt.iso(h.released_at),
        }
        for h in holds
    ]
    if args.json:
        print(fmt.to_json(rows))
        return 0
    columns = ["hold_id", "scope", "on", "reason", "until", "released"]
    print(fmt.table(["hold", *columns[1:]], [[r[c] for c in columns] for r in rows]))
    return 0


def run_release(args: argparse.Namespace) -> int:
    from include.dsr.core.errors import TerminalError
    from include.dsr.ledger.holds import LegalHolds

    with open_ledger() as ledger:
        try:
            hold = LegalHolds(ledger).release(args.hold_id, getpass.getuser(), now=context.now_utc())
        except TerminalError as exc:
            raise CliError(str(exc)) from exc
    print(f"hold {hold.hold_id} released")
    return 0
