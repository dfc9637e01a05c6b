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

    def _answer(self, ref: str) -> tuple[str, dict | None]:
        """Status of one partner request: pending until an answer for the current attempt exists."""
        request, answer = self._read(f"{self.inbox}{ref}.json"), self._read(f"{self.outbox}{ref}.json")
        if answer is None or request is None:
            return PENDING, None
        if answer.get("request_status") == COMPLETED:
            return COMPLETED, answer
        if answer.get("attempt", 1) == request.get("attempt", 1):
            return FAILED, answer
        return PENDING, None

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

        def write(item: tuple[str, list, dict]) -> bool:
            ref, identities, extra = item
            status, _ = self._answer(ref)
            existing = self._read(f"{self.inbox}{ref}.json")
            if status == COMPLETED or (existing and status == PENDING):
                return False
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
        return dict(zip(refs, (status for status, _ in self._each(self._answer, refs)), strict=True))

    def failure(self, ref: str) -> str:
        _, answer = self._answer(ref)
        return partner_text((answer or {}).get("error", "no reason given"))

    def answer(self, ref: str) -> dict:
        return self._answer(ref)[1] or {}
