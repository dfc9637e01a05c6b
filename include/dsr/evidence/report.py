"""Human-readable (Markdown) rendering of an evidence bundle from :mod:`include.dsr.evidence.bundle`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from include.dsr.sla.deadlines import CONTROLLER_TZ

NONE = "none recorded"


def _text(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_text(v) for v in row) + " |" for row in rows]
    return lines


def _pairs(pairs: Iterable[tuple[str, Any]]) -> list[str]:
    return _table(("", ""), pairs)


def _section(title: str, lines: list[str]) -> list[str]:
    return [f"## {title}", "", *lines, ""]


def _facts(items: list[dict[str, Any]]) -> list[str]:
    """One bullet per recorded item, its facts as ``key: value``."""
    if not items:
        return [NONE]
    return ["- " + "; ".join(f"{k}: {_text(v)}" for k, v in item.items()) for item in items]


def _deadline_lines(d: dict[str, Any]) -> list[str]:
    return [
        f"Rule: {d['rule']}. Deadlines end at 23:59:59 {CONTROLLER_TZ.key} time; shown in UTC.",
        "",
        *_pairs(
            [
                ("due (recorded)", d["due_at"]),
                ("due (recomputed by the rule)", d["due_at_recomputed"]),
                ("recorded due matches the rule", d["due_at_matches_rule"]),
                ("extended due", d["extended_due_at"]),
                ("acknowledge by (CCPA)", d["acknowledge_by"]),
                ("paused days (counted)", d["paused_days"]),
                ("first deadline after pauses", d["first_deadline_after_pauses"]),
                ("deadline in force", d["deadline_in_force"]),
                ("answered within the first deadline", d["answered_within_first_deadline"]),
                ("answered within the deadline in force", d["answered_within_deadline_in_force"]),
            ]
        ),
    ]


def _chain_lines(bundle: dict[str, Any]) -> list[str]:
    chain = bundle["chain"]
    verdict = (
        "verifies"
        if chain["ok"]
        else f"DOES NOT VERIFY: first broken row seq {chain['first_broken_seq']}: {chain['reason']}"
    )
    lines = [
        f"Whole ledger chain: {verdict} ({chain['events_checked']} events checked; head seq "
        f"{_text(chain['head_seq'])}, hash `{_text(chain['head_hash'])}`).",
        f"This request's {chain['request_events']} events: every stored hash "
        f"{'matches' if chain['request_event_hashes_ok'] else 'does NOT match'} its recomputed value.",
        "",
        "Each hash is sha256 of the canonical JSON of prev_hash, seq, request_id, event_type, payload "
        "(the `payload_json` text in the JSON bundle) and created_at (UTC, microseconds); see "
        "`include/dsr/ledger/chain.py`.",
        "",
    ]
    rows = [
        (
            e["seq"],
            e["event_type"],
            e["created_at"],
            f"`{e['prev_hash'][:12]}…`",
            f"`{e['hash'][:12]}…`",
            e["hash_ok"],
            "presigned link withheld" if e["payload_redacted"] else "in the JSON bundle",
        )
        for e in bundle["events"]
    ]
    return lines + _table(("seq", "event", "created (UTC)", "prev hash", "hash", "hash ok", "payload"), rows)


def render_markdown(bundle: dict[str, Any]) -> str:
    """The bundle as a Markdown document for a reader (the JSON file is the complete record)."""
    req, response, ext, ver = bundle["request"], bundle["response"], bundle["extension"], bundle["verification"]
    actions = [
        (a["system"], a["action"], a["status"], a["record_count"], a["outcome"], a["at"], a["attempts"])
        for a in bundle["actions"]
    ]
    extension = (
        _pairs(
            [
                ("extended due", ext["extended_due_at"]),
                ("reason", ext["reason"]),
                ("recorded at", ext["recorded_at"]),
                ("recorded before the first deadline", ext["recorded_before_first_deadline"]),
                ("notice to the subject sent", ext["notice_sent_at"]),
                ("valid (notice before the first deadline)", ext["valid"]),
            ]
        )
        if ext
        else ["no extension"]
    )
    package = response["package"] or {}
    lines = [
        f"# Evidence: data-subject request {req['request_id']}",
        "",
        f"Generated {bundle['generated_at']} from the Fabconnect DSR request ledger ({bundle['format']}). "
        "Facts only: the ledger holds no personal data; the subject is not named here.",
        "",
    ]
    lines += _section(
        "Request",
        _pairs(
            [
                ("request id", req["request_id"]),
                ("rights invoked", ", ".join(req["rights_invoked"])),
                ("jurisdiction", req["jurisdiction"]),
                ("channel", req["channel"]),
                ("received", req["received_at"]),
                ("recorded", req["recorded_at"]),
                ("Airflow run", req["dag_run_id"]),
                ("status", req["status"]),
            ]
        ),
    )
    lines += _section("Deadlines", _deadline_lines(bundle["deadlines"]))
    lines += _section(
        "Identity verification",
        _pairs(
            [
                ("outcome", ver["outcome"]),
                ("method", ver["method"]),
                ("verified at", ver["verified_at"]),
                ("confirmed by", ver["confirmed_by"]),
                ("recorded at", ver["recorded_at"]),
            ]
        ),
    )
    lines += _section("Pauses", _facts(bundle["pauses"]))
    lines += _section("Extension", extension)
    lines += _section(
        "Actions per system",
        _table(("system", "action", "status", "count", "outcome", "time (UTC)", "attempts"), actions)
        if actions
        else [NONE],
    )
    lines += _section("Exceptions applied (legal basis)", _facts(bundle["exceptions"]))
    lines += _section("Art. 19 notices to recipients", _facts(bundle["art19_notices"]))
    lines += _section("Notices to the data subject", _facts(bundle["subject_notices"]))
    lines += _section(
        "Response",
        _pairs(
            [
                ("status", response["status"]),
                ("response date (closed)", response["closed_at"]),
                ("outcome", response.get("outcome")),
                ("outcome summary", response["outcome_summary"]),
                ("recipients that did not confirm", ", ".join(response.get("exceptions") or []) or None),
                ("package location", package.get("location")),
                ("package files", package.get("files")),
                ("manifest sha256", package.get("manifest_sha256")),
                ("records delivered", package.get("records")),
                ("package link expires", response["package_link_expires_at"]),
            ]
        ),
    )
    lines += _section("Event chain", _chain_lines(bundle))
    return "\n".join(lines).rstrip() + "\n"
