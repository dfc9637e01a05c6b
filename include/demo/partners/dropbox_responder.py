"""S3 drop-box partner simulator (channel ``s3_dropbox``).

The client writes ``inbox/<subject_request_id>.json`` into the partner's bucket, with the
body of ``POST /opendsr/requests`` (see :func:`~include.demo.partners.protocol.parse_request`).
The responder polls the bucket and writes ``outbox/<subject_request_id>.json``::

    {"subject_request_id", "request_type", "request_status": "completed" | "failed",
     "records": {table: [rows]}, "affected": {table: count}, "completed_time",
     "attempt", "error" (failed only)}

Retry convention: to re-submit (after a ``failed`` answer), the client overwrites
``inbox/<id>.json`` with the same request and an ``"attempt"`` one higher (default 1).
Every version of an inbox file is answered exactly once, and the answer echoes its
``attempt``, so the client can tell a fresh answer from the previous one. Re-submitting a
completed request returns the stored result; nothing is carried out twice.

Remote control, read on every poll and applied when the file changes:
``_control/faults.json`` holds :class:`~include.demo.partners.faults.Faults` fields;
``_control/clock.json`` holds ``{"advance_hours": h}``, the total offset of the simulated
clock. Answered inbox versions are kept in ``_sim_inbox`` in the partner's SQLite file, so a
restarted responder answers nothing twice (it re-applies the control files once).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from include.demo.partners.faults import Faults, SimClock, to_iso
from include.demo.partners.protocol import RequestBook, leaky_error, parse_request
from include.demo.partners.store import PartnerStore

log = logging.getLogger(__name__)

INBOX = "inbox/"
OUTBOX = "outbox/"
CONTROL_FAULTS = "_control/faults.json"
CONTROL_CLOCK = "_control/clock.json"

_INBOX_KEY = re.compile(r"inbox/[^/]+\.json")
_INBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS _sim_inbox (inbox_key TEXT PRIMARY KEY, version TEXT NOT NULL,
                                       attempt INTEGER NOT NULL, answered INTEGER NOT NULL)
"""


@dataclass(frozen=True)
class _Seen:
    """What the responder did with one version of an inbox file."""

    version: str
    attempt: int
    answered: bool


def _attempt(body: Any) -> int:
    attempt = body.get("attempt", 1) if isinstance(body, dict) else 1
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError("attempt must be a positive integer")
    return attempt


class DropboxResponder:
    """A partner answering request files in its S3 bucket, with fault knobs.

    Set ``responder.faults = Faults(...)`` or call ``responder.clock.advance(hours)``
    in-process, or write the control files remotely.

    :param slug: the partner's slug (used in logs and the thread name).
    :param store_path: the partner's SQLite file.
    :param bucket: the partner's drop-box bucket (must exist).
    :param s3_client_factory: returns a boto3 S3 client (e.g. with ``endpoint_url``).
    :param poll_seconds: pause between two polls of the background thread; an idle responder
        doubles it after each poll that found nothing new and nothing pending, up to
        :attr:`IDLE_BACKOFF` times (each poll lists the whole inbox, and the drop box shares the
        store with the product).
    :param faults: initial faults (default: behave).
    """

    IDLE_BACKOFF = 8

    def __init__(
        self,
        slug: str,
        store_path: str | Path,
        bucket: str,
        s3_client_factory: Callable[[], Any],
        poll_seconds: float = 0.2,
        faults: Faults | None = None,
    ) -> None:
        self.slug = slug
        self.bucket = bucket
        self.poll_seconds = poll_seconds
        self.faults = faults if faults is not None else Faults()
        self.clock = SimClock()
        self.book = RequestBook(PartnerStore(store_path), self.clock)
        self._s3 = s3_client_factory()
        self._poll_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._control_versions: dict[str, str] = {}
        with self.book.store.connect() as conn:
            conn.execute(_INBOX_SCHEMA)
            rows = conn.execute("SELECT inbox_key, version, attempt, answered FROM _sim_inbox").fetchall()
        self._seen = {key: _Seen(version, attempt, bool(answered)) for key, version, attempt, answered in rows}

    def start(self) -> None:
        """Poll in a background thread until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError(f"partner {self.slug} responder is already started")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=f"partner-dropbox-{self.slug}", daemon=True)
        self._thread.start()
        log.info("partner %s drop-box responder polling bucket %s", self.slug, self.bucket)

    def stop(self) -> None:
        """Stop polling; a stalled request is left for the next run."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None
        self._stopping.clear()  # poll_once keeps working in-process after a stop
        log.info("partner %s drop-box responder stopped", self.slug)

    def __enter__(self) -> DropboxResponder:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def poll_once(self) -> int:
        """Apply changed control files, answer new inbox files, follow up pending ones.

        :returns: how many answers were written to the outbox.
        """
        return self._poll()[0]

    def _poll(self) -> tuple[int, int]:
        """:meth:`poll_once`; also how busy the drop box is: changed control and inbox files,
        requests still unanswered, answers written (0: nothing to do but wait for new files)."""
        with self._poll_lock:
            busy = self._apply_controls()
            written = 0
            for key, version in self._list(INBOX):
                if self._stopping.is_set():
                    break
                if not _INBOX_KEY.fullmatch(key):
                    continue
                seen = self._seen.get(key)
                if seen is None or seen.version != version:
                    busy += 1
                    written += self._handle(key, version)
                elif not seen.answered:
                    busy += 1  # a stalled or late answer is due: keep looking at the short interval
                    written += self._follow_up(key, seen)
            return written, busy + written

    def _run(self) -> None:
        wait = self.poll_seconds
        while not self._stopping.is_set():
            busy = 1
            try:
                _, busy = self._poll()
            except Exception:
                log.exception("partner %s: drop-box poll failed", self.slug)
            idle = min(wait * 2, self.poll_seconds * self.IDLE_BACKOFF)
            wait = self.poll_seconds if busy else idle
            self._stopping.wait(wait)

    def _list(self, prefix: str) -> Iterator[tuple[str, str]]:
        """``(key, version)`` of the objects under a prefix; a version changes on every write."""
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"], f"{obj['ETag']}@{obj['LastModified'].isoformat()}"

    def _read_json(self, key: str) -> Any:
        return json.loads(self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def _apply_controls(self) -> int:
        """Apply changed control files; how many changed."""
        changed = 0
        for key, version in self._list("_control/"):
            if key not in (CONTROL_FAULTS, CONTROL_CLOCK) or self._control_versions.get(key) == version:
                continue
            changed += 1
            self._control_versions[key] = version
            try:
                doc = self._read_json(key)
                if key == CONTROL_FAULTS:
                    self.faults = Faults.from_dict(doc)
                else:
                    self.clock.set_offset(doc.get("advance_hours") if isinstance(doc, dict) else None)
            except ValueError as exc:
                log.warning("partner %s: ignoring %s: %s", self.slug, key, exc)
            else:
                log.info(
                    "partner %s: applied %s (mode %s, clock +%sh)",
                    self.slug,
                    key,
                    self.faults.mode,
                    self.clock.offset_hours,
                )
        return changed

    def _take_failure(self) -> bool:
        """Serve one simulated failure if the faults ask for it."""
        failing = self.faults.mode == "fail"
        if failing:
            self.faults = self.faults.after_failure()
        return failing

    def _handle(self, key: str, version: str) -> int:
        request_id = key[len(INBOX) : -len(".json")]
        if self.faults.mode == "stall" and self._stopping.wait(self.faults.stall_seconds):
            return 0  # stopping: the next run handles the file
        body: Any = None
        try:
            body = self._read_json(key)
            attempt = _attempt(body)
        except ValueError as exc:
            return self._answer(key, version, 1, self._failed(request_id, body, str(exc)))
        if self._take_failure():
            return self._answer(key, version, attempt, self._failed(request_id, body, "simulated partner failure"))
        try:
            request = parse_request(body)
            if request.subject_request_id != request_id:
                raise ValueError("subject_request_id does not match the inbox file name")
            if self.faults.mode == "leak":
                return self._answer(
                    key, version, attempt, self._failed(request_id, body, leaky_error(request, self.book.store))
                )
            found = self.book.submit(
                request_id, request.request_type, request.identities, self.faults, request.corrections
            )
        except ValueError as exc:  # an invalid body, or RequestConflict
            return self._answer(key, version, attempt, self._failed(request_id, body, str(exc)))
        if found["request_status"] != "completed":
            self._remember(key, _Seen(version, attempt, answered=False))
            return 0
        return self._answer(key, version, attempt, _completed(found))

    def _follow_up(self, key: str, seen: _Seen) -> int:
        found = self.book.get(key[len(INBOX) : -len(".json")])
        if found is None or found["request_status"] != "completed":
            return 0
        return self._answer(key, seen.version, seen.attempt, _completed(found))

    def _failed(self, request_id: str, body: Any, error: str) -> dict[str, Any]:
        request_type = body.get("subject_request_type") if isinstance(body, dict) else None
        return {
            "subject_request_id": request_id,
            "request_type": request_type,
            "request_status": "failed",
            "records": {},
            "affected": {},
            "completed_time": to_iso(self.clock.now()),
            "error": error,
        }

    def _answer(self, key: str, version: str, attempt: int, answer: dict[str, Any]) -> int:
        answer["attempt"] = attempt
        self._s3.put_object(
            Bucket=self.bucket,
            Key=OUTBOX + key[len(INBOX) :],
            Body=json.dumps(answer).encode(),
            ContentType="application/json",
        )
        self._remember(key, _Seen(version, attempt, answered=True))
        log.info(
            "partner %s: answered request %s attempt %d: %s",
            self.slug,
            answer["subject_request_id"],
            attempt,
            answer["request_status"],
        )
        return 1

    def _remember(self, key: str, seen: _Seen) -> None:
        with self.book.store.connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO _sim_inbox VALUES (?, ?, ?, ?)",
                [key, seen.version, seen.attempt, int(seen.answered)],
            )
        self._seen[key] = seen


def _completed(found: dict[str, Any]) -> dict[str, Any]:
    fields = ("subject_request_id", "request_type", "request_status", "records", "affected", "completed_time")
    return {name: found[name] for name in fields}
