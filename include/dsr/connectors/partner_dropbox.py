"""Connector for partners reached through an S3 drop box (channel ``s3_dropbox``).

We write ``<inbox>/<partner request id>.json`` (the same body as the API channel's POST)
into the bucket the partner shares; the partner answers in ``<outbox>/<id>.json`` with
``request_status`` completed or failed, days later in real life. A failed answer is
retried by re-writing the inbox file with ``attempt`` one higher; the answer echoes the
attempt, so an old failure is never mistaken for the answer to the retry.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from include.dsr.connectors.partner import (
    COMPLETED,
    FAILED,
    PENDING,
    PartnerConnector,
    identity_sets,
    partner_refs,
    partner_text,
)

if TYPE_CHECKING:
    from include.dsr.core.data_map import System
    from include.dsr.identity.resolver import ResolvedSubject

log = logging.getLogger(__name__)


class PartnerDropboxConnector(PartnerConnector):
    """:param s3: boto3 client override (tests); by default from the partner's connection."""

    channel: ClassVar[str] = "s3_dropbox"
    capabilities: ClassVar[frozenset[str]] = frozenset({"test_connection", "export"})
    # A poll is one listing of the batch's files, whatever its size: polling soon costs little,
    # and a partner whose job watches its inbox answers within moments.
    first_poll_seconds: ClassVar[float] = 0.25

    def __init__(self, system: System, s3: Any = None) -> None:
        super().__init__(system)
        self._s3 = s3
        config = system.channel_config
        self.bucket = config["bucket"]
        self.inbox, self.outbox = config.get("inbox_prefix", "inbox/"), config.get("outbox_prefix", "outbox/")

    @cached_property
    def s3(self):
        from include.dsr.connections import s3_client

        return self._s3 or s3_client(self.system.connection_id)

    def test_connection(self) -> None:
        self.s3.head_bucket(Bucket=self.bucket)

    def _read(self, key: str) -> dict | None:
        try:
            return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None

    def _present(self, folder: str, refs: list[str]) -> set[str] | None:
        """Those of ``refs`` with a file in ``folder``, from one listing of the refs' common prefix
        (a wave's refs share their wave's id), so a file that is not there costs no read.

        :returns: None when the listing would cost more than reading each file (the refs share no
            prefix, or the folder holds many other files under theirs): read each then.
        """
        common = os.path.commonprefix(refs)
        if not refs or not common:
            return None
        wanted, found = set(refs), set()
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=folder + common, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
        )
        for calls, page in enumerate(pages, start=1):
            for item in page.get("Contents", []):
                ref = item["Key"][len(folder) :].removesuffix(".json")
                if ref in wanted:
                    found.add(ref)
            if page.get("IsTruncated") and calls >= max(1, len(refs) // LIST_PAGES_PER_READ):
                return None
        return found

    def _answer(
        self, ref: str, inbox: set[str] | None = None, outbox: set[str] | None = None
    ) -> tuple[str, dict | None, dict | None]:
        """Status of one partner request, its answer and our request file: pending until an answer
        for the current attempt exists. ``inbox`` / ``outbox``: the refs known to have a file there
        (None: unknown, read to find out); a file known to be absent is never read."""
        answer = self._read(f"{self.outbox}{ref}.json") if outbox is None or ref in outbox else None
        if inbox is not None and (ref not in inbox or answer is None):
            return PENDING, None, None  # no request of ours, or not answered: no content is needed
        if inbox is not None and answer is not None and answer.get("request_status") == COMPLETED:
            return COMPLETED, answer, None  # our request is there (listed): its content is not needed
        request = self._read(f"{self.inbox}{ref}.json")
        if answer is None or request is None:
            return PENDING, None, request
        if answer.get("request_status") == COMPLETED:
            return COMPLETED, answer, request
        if answer.get("attempt", 1) == request.get("attempt", 1):
            return FAILED, answer, request
        return PENDING, None, request

    def submit(
        self,
        subjects: list[ResolvedSubject],
        request_type: str,
        label: str | None = None,
        details: dict[str, dict] | None = None,
    ) -> dict[str, list[str]]:
        """Write inbox files (a failed attempt is re-written with ``attempt + 1``)."""
        refs: dict[str, list[str]] = {}
        pending = []
        for subject in subjects:
            refs[subject.request_id] = partner_refs(subject, request_type, label)
            extra = (details or {}).get(subject.request_id, {})
            pending += [
                (ref, ids, extra) for ref, ids in zip(refs[subject.request_id], identity_sets(subject), strict=True)
            ]
        all_refs = [ref for ref, _, _ in pending]
        inbox, outbox = self._present(self.inbox, all_refs), self._present(self.outbox, all_refs)

        def write(item: tuple[str, list, dict]) -> bool:
            ref, identities, extra = item
            status, _, existing = self._answer(ref, inbox, outbox)
            submitted = existing is not None or (inbox is not None and ref in inbox)
            if status == COMPLETED or (submitted and status == PENDING):
                return False  # answered, or asked and not answered yet (a failed one is asked again)
            body = {
                "subject_request_id": ref,
                "subject_request_type": request_type,
                "attempt": (existing or {}).get("attempt", 0) + 1,
                "subject_identities": identities,
                "submitted_time": datetime.now(UTC).isoformat(),
                **extra,
            }
            self.s3.put_object(Bucket=self.bucket, Key=f"{self.inbox}{ref}.json", Body=json.dumps(body).encode())
            return True

        written = sum(self._each(write, pending))
        log.info("wrote %s %s request files to the drop box of %s", written, request_type, self.system.key)
        return refs

    def poll(self, refs: list[str]) -> dict[str, str]:
        inbox, outbox = self._present(self.inbox, refs), self._present(self.outbox, refs)
        statuses = self._each(lambda ref: self._answer(ref, inbox, outbox)[0], refs)
        return dict(zip(refs, statuses, strict=True))

    def failure(self, ref: str) -> str:
        _, answer, _ = self._answer(ref)
        return partner_text((answer or {}).get("error", "no reason given"))

    def answer(self, ref: str) -> dict:
        return self._answer(ref)[1] or {}

    def answers(self, refs: list[str]) -> dict[str, dict]:
        inbox, outbox = self._present(self.inbox, refs), self._present(self.outbox, refs)
        read = self._each(lambda ref: self._answer(ref, inbox, outbox)[1] or {}, refs)
        return dict(zip(refs, read, strict=True))


#: Keys per listing page (S3's most); a listing that would take more pages than one per
#: ``LIST_PAGES_PER_READ`` refs is given up for a read per file.
LIST_PAGE_SIZE = 1000
LIST_PAGES_PER_READ = 500
