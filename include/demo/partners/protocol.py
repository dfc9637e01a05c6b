"""The partner side of the OpenDSR 0.1 request lifecycle, shared by both simulator channels.

- :func:`parse_request` validates a request body, as ``POST /opendsr/requests`` receives it
  (:mod:`~include.demo.partners.api_server`) and as the drop-box channel finds it in
  ``inbox/<id>.json`` (:mod:`~include.demo.partners.dropbox_responder`).
- :class:`RequestBook` records the requests a partner received (idempotent on
  ``subject_request_id``; :class:`RequestConflict` when the id is reused for another
  request) and completes them on the partner's data as the faults allow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from include.demo.partners.faults import Faults, SimClock, to_iso
from include.demo.partners.store import CORRECTABLE, IDENTITY_TYPES, REQUEST_TYPES
from include.dsr.core.identities import normalize_email, normalize_phone
from include.dsr.core.pii import Pii

if TYPE_CHECKING:
    from include.demo.partners.store import PartnerStore

log = logging.getLogger(__name__)

CORRECTIONS_KEY = "_corrections"  # beside the identities in _sim_requests, gone at completion
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_NORMALIZE = {"email": normalize_email, "phone": normalize_phone}


@dataclass(frozen=True)
class SubjectRequest:
    """A validated request; identity values are normalized and masked in ``repr``."""

    subject_request_id: str
    request_type: str
    identities: dict[str, Pii]
    submitted_time: str
    #: a rectification's corrected values (``email``, ``phone``, ``name``, ``company``)
    corrections: dict[str, Pii] | None = None


def parse_request(body: Any) -> SubjectRequest:
    """Validate an OpenDSR request body (the drop-box channel uses the same body).

    Unknown extra fields are ignored. Error messages name the field, never its value.

    :param body: the decoded JSON body.
    :raises ValueError: naming the first invalid field.
    """
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    request_id = body.get("subject_request_id")
    if not isinstance(request_id, str) or not _ID.fullmatch(request_id):
        raise ValueError("subject_request_id must be 1-128 letters, digits or . _ : - characters")
    if body.get("subject_request_type") not in REQUEST_TYPES:
        raise ValueError(f"subject_request_type must be one of: {', '.join(REQUEST_TYPES)}")
    try:
        datetime.fromisoformat(body.get("submitted_time"))
    except (TypeError, ValueError):
        raise ValueError("submitted_time must be an ISO-8601 time") from None
    entries = body.get("subject_identities")
    if not isinstance(entries, list) or not entries:
        raise ValueError("subject_identities must be a non-empty list")
    identities: dict[str, str] = {}
    for entry in entries:
        kind = entry.get("identity_type") if isinstance(entry, dict) else None
        if kind not in IDENTITY_TYPES:
            raise ValueError(f"subject_identities: identity_type must be one of: {', '.join(IDENTITY_TYPES)}")
        raw = entry.get("identity_value")
        value = _NORMALIZE[kind](raw) if isinstance(raw, str) else None
        if not value or (kind == "email" and "@" not in value):
            raise ValueError(f"subject_identities: identity_value is not a valid {kind}")
        if identities.setdefault(kind, value) != value:
            raise ValueError(f"subject_identities: more than one {kind}")
    corrections = _corrections(body) if body["subject_request_type"] == "rectification" else None
    return SubjectRequest(
        request_id,
        body["subject_request_type"],
        {k: Pii(v) for k, v in identities.items()},
        body["submitted_time"],
        corrections,
    )


def _corrections(body: dict) -> dict[str, Pii]:
    """A rectification's ``corrections``: an object of the correctable fields and their new values."""
    raw = body.get("corrections")
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"corrections must be an object of the corrected fields ({', '.join(CORRECTABLE)})")
    found = {}
    for key, value in raw.items():
        if key not in CORRECTABLE:
            raise ValueError(f"corrections: unknown field; correctable: {', '.join(CORRECTABLE)}")
        normal = _NORMALIZE[key](value) if key in _NORMALIZE and isinstance(value, str) else value
        if not isinstance(normal, str) or not normal.strip() or (key == "email" and "@" not in normal):
            raise ValueError(f"corrections: {key} is not a valid value")
        found[key] = Pii(normal)
    return found


def leaky_error(request: SubjectRequest, store: PartnerStore | None = None) -> str:
    """The ``leak`` fault's refusal: it quotes every identity it was sent and the name it holds
    for them, as a careless partner does."""
    quoted = ", ".join(f"{kind} {value.value}" for kind, value in sorted(request.identities.items()))
    names = set()
    if store is not None:
        found = store.find({kind: value.value for kind, value in request.identities.items()})
        names = {
            str(value)
            for rows in found.values()
            for row in rows
            for column, value in row.items()
            if value and (column == "name" or column.endswith("_name"))
        }
    held = f" (we hold records of {', '.join(sorted(names))})" if names else ""
    return f"no data subject matches {quoted} in our records{held} (request {request.subject_request_id})"


class RequestConflict(ValueError):
    """A ``subject_request_id`` is reused for another request type or subject."""


_REQUESTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS _sim_requests (
    subject_request_id TEXT PRIMARY KEY, request_type TEXT NOT NULL, fingerprint TEXT NOT NULL,
    identities TEXT, fault TEXT NOT NULL, request_status TEXT NOT NULL, received_time TEXT NOT NULL,
    due_time TEXT, expected_completion_time TEXT NOT NULL, completed_time TEXT, result TEXT
)
"""


def _fingerprint(request_type: str, identities: Mapping[str, str]) -> str:
    """Digest of what a request asks, to detect a reused id without keeping identities."""
    canonical = json.dumps([request_type, sorted((k, v) for k, v in identities.items() if v)])
    return hashlib.sha256(canonical.encode()).hexdigest()


class RequestBook:
    """Requests a partner received (table ``_sim_requests``) and their completion.

    A request is recorded once per ``subject_request_id``; it completes when received, or
    lazily (on the first :meth:`get` after its due time) under ``late``, or never. The
    identities are kept only until completion; a digest of them stays for idempotency.

    :param store: the partner data completed requests act on.
    :param clock: the simulated clock that decides when late requests are due.
    """

    def __init__(self, store: PartnerStore, clock: SimClock) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        with store.connect() as conn:
            conn.execute(_REQUESTS_SCHEMA)

    def submit(
        self,
        request_id: str,
        request_type: str,
        identities: Mapping[str, str],
        faults: Faults,
        corrections: Mapping[str, str] | None = None,
    ) -> dict:
        """Record a request (idempotent on its id) and complete it if it is due.

        :param request_id: the client's ``subject_request_id``.
        :param request_type: one of :data:`REQUEST_TYPES`.
        :param identities: normalized ``email`` and/or ``phone``.
        :param faults: the faults in force, which decide when it completes and if it lies.
        :param corrections: a rectification's new values (kept, like the identities, until done).
        :returns: the request as :meth:`get` returns it.
        :raises RequestConflict: the id is already used for another type or subject.
        """
        fingerprint = _fingerprint(
            request_type, {**identities, **{f"new_{k}": v for k, v in (corrections or {}).items()}}
        )
        with self._lock:
            row = self._load(request_id)
            if row is None:
                received = self.clock.now()
                due, promised = faults.schedule(received)
                row = {
                    "subject_request_id": request_id,
                    "request_type": request_type,
                    "fingerprint": fingerprint,
                    "identities": json.dumps({**identities, CORRECTIONS_KEY: dict(corrections or {})}),
                    "fault": faults.mode,
                    "request_status": "pending",
                    "received_time": to_iso(received),
                    "due_time": due and to_iso(due),
                    "expected_completion_time": to_iso(promised),
                    "completed_time": None,
                    "result": None,
                }
                with self.store.connect() as conn:
                    conn.execute(
                        f"INSERT INTO _sim_requests ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                        list(row.values()),
                    )
                log.info(
                    "%s: request %s (%s) received, fault mode %s",
                    self.store.path.stem,
                    request_id,
                    request_type,
                    faults.mode,
                )
            elif row["fingerprint"] != fingerprint:
                raise RequestConflict(f"subject_request_id {request_id} is already used for another request")
            return self._refresh(row)

    def get(self, request_id: str) -> dict | None:
        """A request, completed first if it is due; None if unknown.

        :returns: ``subject_request_id``, ``request_type``, ``request_status``
            (``pending`` | ``completed``), ``received_time``, ``expected_completion_time``,
            ``completed_time``, and ``records`` / ``affected`` (None until completed).
        """
        with self._lock:
            row = self._load(request_id)
            return None if row is None else self._refresh(row)

    def count(self) -> int:
        """How many requests the partner has received."""
        with self.store.connect() as conn:
            return conn.execute("SELECT count(*) FROM _sim_requests").fetchone()[0]

    def _load(self, request_id: str) -> dict | None:
        with self.store.connect() as conn:
            row = conn.execute("SELECT * FROM _sim_requests WHERE subject_request_id = ?", [request_id]).fetchone()
        return None if row is None else dict(row)

    def _refresh(self, row: dict) -> dict:
        due = row["due_time"]
        if row["request_status"] == "pending" and due and self.clock.now() >= datetime.fromisoformat(due):
            row = self._complete(row)
        result = json.loads(row["result"]) if row["result"] else {"records": None, "affected": None}
        public = {k: v for k, v in row.items() if k not in ("fingerprint", "identities", "fault", "due_time", "result")}
        return public | result

    def _complete(self, row: dict) -> dict:
        identities = json.loads(row["identities"])
        corrections = identities.pop(CORRECTIONS_KEY, None)
        if row["fault"] == "keep" and row["request_type"] in ("erasure", "rectification"):
            found = self.store.find(identities)  # says what it would change, changes nothing
            records, affected = {}, {table: len(rows) for table, rows in found.items()}
        else:
            records, affected = self.store.apply(row["request_type"], identities, corrections)
        if row["fault"] == "lie":
            for table, rows in self.store.other_subject_rows(identities).items():
                records.setdefault(table, []).extend(rows)
        done = {
            "request_status": "completed",
            "completed_time": to_iso(self.clock.now()),
            "identities": None,
            "result": json.dumps({"records": records, "affected": affected}),
        }
        with self.store.connect() as conn:
            conn.execute(
                f"UPDATE _sim_requests SET {', '.join(f'{k} = ?' for k in done)} WHERE subject_request_id = ?",
                [*done.values(), row["subject_request_id"]],
            )
        log.info(
            "%s: request %s (%s) completed, %d rows affected",
            self.store.path.stem,
            row["subject_request_id"],
            row["request_type"],
            sum(affected.values()),
        )
        return row | done
