"""Hash chain of the ledger's event log, canonical JSON and the personal-data guard.

Pure functions: no database access, so an auditor can re-verify an exported event log
with this module alone.

Each event's hash is::

    sha256(canonical_json({"prev_hash": ..., "seq": ..., "request_id": ...,
                           "event_type": ..., "payload": <payload JSON text>,
                           "created_at": <UTC isoformat, microseconds>}))

where ``canonical_json`` is ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=True)``. The first event's ``prev_hash`` is 64 zeros.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from include.dsr.core.errors import LedgerIntegrityError, TerminalError
from include.dsr.ledger.schema import GENESIS_HASH, PersonalDataError

# Something@something.something without whitespace: the shape of an email address.
_EMAIL_LIKE = re.compile(r"[^\s@]@[^\s@]*\.[^\s@]")


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise TerminalError("datetimes in ledger payloads must be timezone-aware")
        return utc_isoformat(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"type {type(value).__name__} is not JSON-serialisable")


def canonical_json(value: Any) -> str:
    """Serialise ``value`` deterministically (sorted keys, no whitespace, ASCII only).

    Aware datetimes become UTC ISO-8601 strings, dates ISO dates.

    :raises TerminalError: when the value is not JSON-serialisable.
    """
    try:
        return json.dumps(
            value,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
            default=_json_default,
        )
    except (TypeError, ValueError) as exc:
        raise TerminalError(f"ledger value is not canonical JSON: {exc}") from exc


def utc_isoformat(value: datetime) -> str:
    """ISO-8601 of ``value`` in UTC with microseconds (the form hashed in the chain)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(
    prev_hash: str,
    seq: int,
    request_id: str | None,
    event_type: str,
    payload_json: str,
    created_at: datetime,
) -> str:
    """Hash of one event, chained to the previous event's hash.

    :param payload_json: the payload exactly as stored (canonical JSON text).
    :returns: 64 lowercase hex characters.
    """
    material = canonical_json(
        {
            "prev_hash": prev_hash,
            "seq": seq,
            "request_id": request_id,
            "event_type": event_type,
            "payload": payload_json,
            "created_at": utc_isoformat(created_at),
        }
    )
    return hashlib.sha256(material.encode("ascii")).hexdigest()


def looks_like_email(text: str) -> bool:
    """True when ``text`` contains an ``@`` with a dot somewhere after it."""
    return bool(_EMAIL_LIKE.search(text))


def reject_personal_data(value: Any, where: str) -> None:
    """Refuse strings (keys included) that look like an email address.

    This is a cheap guard that catches the most common slip (an email copied into a
    payload, evidence or outcome text); it is not a guarantee that a value holds no
    personal data: names, phone numbers or addresses pass. Callers must still write
    facts (counts, S3 keys, references), never records. The error message names the
    field path only, never the value.

    :param value: a string, a number, or nested dicts/lists of them.
    :param where: name of the field, used in the error message.
    :raises PersonalDataError: on the first email-like string.
    """
    if isinstance(value, str):
        if looks_like_email(value):
            raise PersonalDataError(
                f"{where} looks like an email address; the ledger keeps facts, not personal "
                "data: store a count, an S3 key or a reference instead"
            )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            reject_personal_data(str(key), f"a key in {where}")
            reject_personal_data(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            reject_personal_data(item, f"{where}[{index}]")


@dataclass(frozen=True)
class ChainReport:
    """Result of :func:`verify_events`.

    :ivar ok: True when every row verified.
    :ivar checked: number of rows examined (all rows when ``ok``).
    :ivar first_broken_seq: ``seq`` of the first row that does not verify.
    :ivar reason: what is wrong at that row, for humans.
    :ivar last_seq: ``seq`` of the last row that verified. Deleting the newest rows
        cannot be seen from inside the chain: keep ``(last_seq, last_hash)`` somewhere
        else (an anchor) and compare to detect it.
    :ivar last_hash: ``hash`` of the last row that verified.
    """

    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None
    last_seq: int | None = None
    last_hash: str | None = None


def _row_problem(row: Mapping[str, Any], expected_seq: int, prev_hash: str) -> str | None:
    seq = row["seq"]
    if seq != expected_seq:
        if expected_seq == 1:
            return f"chain starts at seq {seq} instead of 1 (rows deleted)"
        return f"seq gap between {expected_seq - 1} and {seq} (row deleted)"
    recomputed = event_hash(
        row["prev_hash"], seq, row["request_id"], row["event_type"], row["payload"], row["created_at"]
    )
    if recomputed != row["hash"]:
        return f"hash mismatch at seq {seq}: row content changed"
    if row["prev_hash"] != prev_hash:
        if seq == 1:
            return "prev_hash at seq 1 is not the genesis hash"
        return f"prev_hash at seq {seq} does not match hash of seq {seq - 1}"
    return None


def verify_events(rows: Iterable[Mapping[Any, Any]]) -> ChainReport:
    """Verify event rows given in ``seq`` order (mappings with the table's columns).

    Checks, per row: ``seq`` continues the previous one without a gap; the stored hash
    matches the row's content; ``prev_hash`` equals the previous row's hash.

    :returns: a report that stops at the first broken row.
    """
    prev_hash, checked, last_seq = GENESIS_HASH, 0, None
    try:
        for row in rows:
            checked += 1
            problem = _row_problem(row, (last_seq or 0) + 1, prev_hash)
            if problem:
                return ChainReport(False, checked, row["seq"], problem, last_seq, prev_hash)
            last_seq, prev_hash = row["seq"], row["hash"]
    except (ValueError, TypeError) as exc:  # a value the driver cannot read back, e.g. text in a timestamp
        reason = f"unreadable row after seq {last_seq or 0} ({type(exc).__name__}): row content changed"
        return ChainReport(False, checked, (last_seq or 0) + 1, reason, last_seq, prev_hash)
    return ChainReport(True, checked, None, None, last_seq, prev_hash if last_seq else None)


def raise_if_broken(report: ChainReport) -> ChainReport:
    """Return ``report`` when it is ok.

    :raises LedgerIntegrityError: with the report's reason otherwise.
    """
    if not report.ok:
        raise LedgerIntegrityError(f"ledger event chain does not verify: {report.reason}")
    return report


def check_text(name: str, value: object, max_length: int, *, required: bool = True) -> None:
    """Check a free-text or identifier field bound for the ledger.

    :param required: when False, None is accepted.
    :raises TerminalError: not a non-empty string of at most ``max_length`` characters.
    :raises PersonalDataError: the text looks like an email address.
    """
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise TerminalError(f"{name} must be a non-empty string of at most {max_length} characters")
    reject_personal_data(value, name)
