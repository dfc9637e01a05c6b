"""Waves: many requests of one right in one DAG run, through the same steps as a single request.

A wave is a JSON Lines file in the exports bucket (``_waves/<wave id>.jsonl``), one request per
line, each line what a single run's conf would be (``request_id``, ``subject``, ``received_at``,
``verification``, ``jurisdiction``). The run's conf only names it (``{"request_id": <wave id>,
"wave": "_waves/<wave id>.jsonl"}``, see :func:`include.dsr.core.request.parse_wave`), so no
identity enters Airflow; the file is deleted once every request of the wave is closed.

Each line is taken on its own, and a bad one is refused and reported while the rest proceed:

* not JSON, not a valid request (:func:`~include.dsr.core.request.parse_request`), or without a
  ``verification`` (a wave has no step where ops confirm an identity: submit it on its own);
* a ``request_id`` already used by an earlier line, or the same subject as an earlier line
  under another id (**duplicates**: the first one proceeds);
* a ``request_id`` the ledger holds for another subject or right.

Accepted lines are recorded, acknowledged and resolved in one set-based batch. A request whose
identities belong to different people is **set aside**: recorded, waiting for ops, who decide
by running it on its own. The wave's report (``_waves/<wave id>/report.json``: line, request id,
status, reason; never identities) says what happened to every line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from include.dsr.core.errors import TerminalError
from include.dsr.core.fingerprint import subject_fingerprint
from include.dsr.core.pii import redact
from include.dsr.core.request import DSRRequest, WaveRequest, parse_request, parse_wave
from include.dsr.identity.resolver import IdentityResolver, ResolvedSubject
from include.dsr.rights.batches import mark_wave

if TYPE_CHECKING:
    from include.dsr.rights.runtime import Runtime

log = logging.getLogger(__name__)

MAX_WAVE_LINES = 20_000
MAX_LINE_BYTES = 16_384
ACCEPTED, REFUSED, DUPLICATE, SET_ASIDE, CLOSED = "accepted", "refused", "duplicate", "set_aside", "closed"


@dataclass
class WaveLine:
    """What became of one line of a wave (ids and reasons only)."""

    line: int
    request_id: str | None
    status: str
    reason: str = ""


@dataclass
class ParsedWave:
    wave: WaveRequest
    lines: list[WaveLine]
    requests: dict[str, tuple[dict, DSRRequest]]  # accepted request id -> (its conf, parsed)

    def report(self) -> dict:
        counts: dict[str, int] = {}
        for line in self.lines:
            counts[line.status] = counts.get(line.status, 0) + 1
        return {
            "wave_id": self.wave.wave_id,
            "right": self.wave.right,
            "lines": len(self.lines),
            "counts": counts,
            "detail": [asdict(line) for line in self.lines],
        }


def report_key(wave_id: str) -> str:
    return f"_waves/{wave_id}/report.json"


def read_lines(rt: Runtime, key: str) -> list[str]:
    """The wave file's lines; refused whole when it is missing or too large to be one wave."""
    try:
        body = rt.s3.get_object(Bucket=rt.exports_bucket, Key=key)["Body"].read()
    except rt.s3.exceptions.NoSuchKey:
        raise TerminalError(f"wave file {key} is not in bucket {rt.exports_bucket}; upload it first") from None
    lines = body.decode("utf-8", errors="replace").splitlines()
    if len(lines) > MAX_WAVE_LINES:
        raise TerminalError(f"wave file {key} has {len(lines)} lines; split it into waves of {MAX_WAVE_LINES}")
    return lines


def parse_lines(rt: Runtime, wave: WaveRequest, raw_lines: list[str]) -> ParsedWave:
    """Validate every line on its own (nothing is touched); duplicates after the first are refused."""
    parsed = ParsedWave(wave, [], {})
    seen_subjects: dict[str, str] = {}
    for number, text in enumerate(raw_lines, start=1):
        if not text.strip():
            continue
        line = WaveLine(number, None, REFUSED)
        parsed.lines.append(line)
        if len(text.encode()) > MAX_LINE_BYTES:
            line.reason = f"line longer than {MAX_LINE_BYTES} bytes"
            continue
        try:
            conf = json.loads(text)
        except ValueError:
            line.reason = "not a JSON object"
            continue
        if not isinstance(conf, dict):
            line.reason = "not a JSON object"
            continue
        if isinstance(conf.get("request_id"), str):
            line.request_id = redact(conf["request_id"], limit=64)
        if conf.get("dry_run"):
            line.reason = "dry_run is set for the whole wave, not per line"
            continue
        try:
            request = parse_request(conf, wave.right)
        except TerminalError as exc:
            line.reason = redact(str(exc), limit=500)
            continue
        line.request_id = request.request_id
        if request.verification is None:
            line.reason = "no verification: a wave has no step where ops confirm identities; submit it on its own"
            continue
        if request.request_id in parsed.requests:
            line.status, line.reason = DUPLICATE, "request_id already used by an earlier line of this wave"
            continue
        fingerprint = subject_fingerprint(request.subject.identities(), rt.fingerprint_secret)
        if fingerprint in seen_subjects:
            line.status = DUPLICATE
            line.reason = f"same subject as request {seen_subjects[fingerprint]} earlier in this wave"
            continue
        seen_subjects[fingerprint] = request.request_id
        line.status = ACCEPTED
        parsed.requests[request.request_id] = (conf, request)
    return parsed


def load(rt: Runtime, conf: dict, right: str) -> ParsedWave:
    wave = parse_wave(conf, right)
    return parse_lines(rt, wave, read_lines(rt, wave.key))


def confs(rt: Runtime, conf: dict, right: str) -> dict[str, dict]:
    """Request id -> its line's conf (for the notices at the end; identities, never logged)."""
    return {rid: line_conf for rid, (line_conf, _) in load(rt, conf, right).requests.items()}


def start_wave(rt: Runtime, conf: dict, right: str, dag_run_id: str | None = None) -> dict:
    """Record, acknowledge and resolve the wave's accepted lines; stage the subjects under the wave.

    Set-based throughout: the ledger rows of all lines in one transaction, the acknowledgements
    over one mail connection, one resolution for the batch. A wave run again re-reads its file:
    closed requests are left alone, open ones resume with the identities staged the first time.

    :returns: counts per line status (what goes to XCom)
    """
    parsed = load(rt, conf, right)
    wave_id = parsed.wave.wave_id
    by_line = {line.request_id: line for line in parsed.lines if line.status == ACCEPTED}
    open_requests = _record(rt, parsed, by_line, right, dag_run_id)
    _acknowledge(rt, open_requests)
    subjects = _resolve(rt, wave_id, open_requests, by_line)
    rt.staging(wave_id).put_subjects(subjects)
    mark_wave(rt, wave_id, right)
    report = parsed.report()
    rt.s3.put_object(
        Bucket=rt.exports_bucket,
        Key=report_key(wave_id),
        Body=json.dumps(report, indent=1).encode(),
        ContentType="application/json",
    )
    summary = {"wave_id": wave_id, "right": right, "lines": report["lines"], **report["counts"]}
    rt.ledger.append_event(None, "wave.received", {**summary, "report_key": report_key(wave_id)})
    log.info("wave %s (%s): %s", wave_id, right, report["counts"])
    return {
        "request_id": wave_id,
        "wave": True,
        "dry_run": False,
        "closed": not subjects,
        "verified": True,
        "counts": report["counts"],
    }


def _record(
    rt: Runtime, parsed: ParsedWave, lines: dict[str | None, WaveLine], right: str, dag_run_id: str | None
) -> dict[str, tuple[dict, DSRRequest]]:
    """Every accepted line in the ledger, recorded and verified in one transaction; returns the open ones."""
    from include.dsr.rights import intake

    requests = {rid: request for rid, (_, request) in parsed.requests.items()}
    started = intake.start_verified_requests(rt, requests, right, dag_run_id)
    open_requests: dict[str, tuple[dict, DSRRequest]] = {}
    for request_id, outcome in started.items():
        line = lines[request_id]
        if isinstance(outcome, TerminalError):  # the id belongs to another subject or right
            line.status, line.reason = REFUSED, redact(str(outcome), limit=500)
        elif not outcome:
            line.status, line.reason = CLOSED, "closed before: nothing to do"
        else:
            open_requests[request_id] = parsed.requests[request_id]
    return open_requests


def _acknowledge(rt: Runtime, requests: dict[str, tuple[dict, DSRRequest]], chunk: int = 100) -> None:
    """One acknowledgement per request, over one mail connection; each chunk's ledger rows commit together."""
    from include.dsr.notify.notices import recipient_from_conf
    from include.dsr.rights import intake

    notices = intake.notices(rt)
    items = list(requests.items())
    with notices.sending():
        for i in range(0, len(items), chunk):
            part = items[i : i + chunk]
            with rt.ledger.batch(), notices.recorded_together([request_id for request_id, _ in part]):
                for request_id, (line_conf, _) in part:
                    recipient = recipient_from_conf(line_conf, request_id, required=False)
                    if recipient:
                        notices.acknowledgement(request_id, recipient)


def _resolve(
    rt: Runtime, wave_id: str, requests: dict[str, tuple[dict, DSRRequest]], lines: dict[str | None, WaveLine]
) -> list[ResolvedSubject]:
    """Resolve the open requests in one batch (those resolved by an earlier run keep their identities)."""
    from include.dsr.rights import intake

    before = {s.request_id: s for s in _staged(rt, wave_id)}
    resolved_before = _resolved(rt, [rid for rid in requests if rid in before])
    kept = [before[rid] for rid in requests if rid in resolved_before]
    todo = {rid: r for rid, r in requests.items() if rid not in resolved_before}
    queries = [intake.subject_query(request) for _, request in todo.values()]
    resolved = IdentityResolver(rt.app_engine, rt.data_map, rt.hash_secret).resolve(queries) if queries else []
    conflicted = [s for s in resolved if s.conflicts]
    fresh = [s for s in resolved if not s.conflicts]
    rt.registry.record_many_subject_keys({s.request_id: s.keys(rt.hash_secret) for s in fresh})
    with rt.ledger.batch():
        for subject in conflicted:
            intake.record_conflict(rt, todo[subject.request_id][1], subject)
            lines[subject.request_id].status = SET_ASIDE
            lines[
                subject.request_id
            ].reason = "identities belong to different people: run this request on its own for an ops decision"
        rt.ledger.append_events(
            [(s.request_id, "subject.resolved", s.summary(), f"{s.request_id}:subject.resolved") for s in fresh]
        )
    return [*kept, *fresh]


def _staged(rt: Runtime, wave_id: str) -> list[ResolvedSubject]:
    staging = rt.staging(wave_id)
    return staging.get_subjects() if staging.exists("subjects.json") else []


def _resolved(rt: Runtime, request_ids: list[str]) -> set[str]:
    """The requests an earlier run already resolved (one query per thousand ids, not one each)."""
    events = rt.ledger.events_of(request_ids, ["subject.resolved"]) if request_ids else {}
    return {rid for rid, found in events.items() if found}


def accepted_request_ids(rt: Runtime, wave_id: str) -> list[str]:
    """The requests a wave took in (from its report), e.g. to mark them failed with the run."""
    try:
        body = rt.s3.get_object(Bucket=rt.exports_bucket, Key=report_key(wave_id))["Body"].read()
    except rt.s3.exceptions.NoSuchKey:
        return []
    report: dict[str, Any] = json.loads(body)
    return [d["request_id"] for d in report["detail"] if d["status"] == ACCEPTED and d["request_id"]]


def delete_file(rt: Runtime, conf: dict, right: str) -> None:
    """The wave's file holds identities: it goes once every request of the wave is closed."""
    from include.dsr.connectors.object_store import delete_versions

    delete_versions(rt.s3, rt.exports_bucket, [parse_wave(conf, right).key])
