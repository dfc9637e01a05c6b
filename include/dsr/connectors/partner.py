"""What every asynchronous partner channel shares (``api``, ``s3_dropbox``), client side of OpenDSR 0.1.

A request to a partner is one or more *partner requests* (the protocol takes one email and
one phone each), named by :func:`partner_request_id` from our ``request_id``: no personal
data, stable across retries. A :class:`PartnerConnector` submits them, polls their status and
reads each completed answer (``records`` per table and the partner's own ``affected`` count
per table). :class:`Answers` folds the answers of a batch into an :class:`ExportResult`
that keeps what the partner actually returned (tables, columns, counts) next to the frames
padded to the data map, so the checks compare the two. Text a partner sends (error bodies,
``error`` fields) is redacted before anyone sees it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from include.dsr.connectors.base import REQUEST_ID_COLUMN, BaseConnector, ExportResult
from include.dsr.core.pii import redact

if TYPE_CHECKING:
    from include.dsr.core.data_map import System
    from include.dsr.identity.resolver import ResolvedSubject

COMPLETED, FAILED, PENDING = "completed", "failed", "pending"
T, R = TypeVar("T"), TypeVar("R")


def partner_request_id(request_id: str, request_type: str, index: int = 0, label: str | None = None) -> str:
    """Our reference at the partner: no personal data, stable across retries.

    :param label: names the purpose when it is not the request type (``verify``: the read that
        checks an erasure)
    """
    suffix = f"-{index + 1}" if index else ""
    return f"fabconnect-{label or request_type}-{request_id}{suffix}"


def identity_sets(subject: ResolvedSubject) -> list[list[dict[str, str]]]:
    """Identities sent to a partner, one set per partner request (the protocol takes one email
    and one phone per request). Emails and unshared phones only, never account ids."""
    emails, phones = sorted(subject.emails), sorted(subject.phones)
    sets = []
    for i in range(max(len(emails), len(phones))):
        ids = [{"identity_type": "email", "identity_value": emails[i]}] if i < len(emails) else []
        ids += [{"identity_type": "phone", "identity_value": phones[i]}] if i < len(phones) else []
        sets.append(ids)
    return sets


def partner_refs(subject: ResolvedSubject, request_type: str, label: str | None = None) -> list[str]:
    return [partner_request_id(subject.request_id, request_type, i, label) for i in range(len(identity_sets(subject)))]


def partner_text(text: object) -> str:
    """A partner's free text, fit for logs and the ledger: identities and control characters out, short."""
    return redact(text)


class Answers:
    """The completed answers of a batch, folded into one result per data-map collection."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[tuple, dict]] = {}
        self.columns: dict[str, set[str]] = defaultdict(set)
        self.tables: set[str] = set()
        self.counts: list[dict[str, Any]] = []

    def add(self, request_id: str, ref: str, answer: dict | None) -> None:
        """One partner request's answer; a row found through several identities is kept once."""
        records = (answer or {}).get("records") or {}
        reported = (answer or {}).get("affected") or {}
        for table, rows in records.items():
            self.tables.add(table)
            self.counts.append(
                {"answer": ref, "collection": table, "returned": len(rows), "reported": reported.get(table)}
            )
            for row in rows:
                self.columns[table] |= set(row)
                self.rows.setdefault(table, {})[(request_id, row.get("id"))] = {**row, REQUEST_ID_COLUMN: request_id}

    def result(self, system: System) -> ExportResult:
        """One frame per data-map collection (empty ones keep their columns); tables the data map
        does not know stay visible so the checks can flag them."""
        import pandas as pd

        result = ExportResult(system.key, returned_collections=sorted(self.tables), answer_counts=self.counts)
        rows = {name: list(found.values()) for name, found in self.rows.items()}
        for coll in system.collections:
            found = rows.pop(coll.name, [])
            result.frames[coll.name] = pd.DataFrame.from_records(found, columns=[*coll.field_names, REQUEST_ID_COLUMN])
            if self.columns.get(coll.name):
                result.returned_columns[coll.name] = sorted(self.columns[coll.name])
        for unexpected, found in rows.items():
            result.frames[unexpected] = pd.DataFrame.from_records(found)
        return result


#: Calls in flight at once to one partner: a wave sends thousands of per-subject requests, and
#: the protocol has one request per subject (OpenDSR), so they go out side by side.
PARALLEL_CALLS = 8


class PartnerConnector(BaseConnector):
    """A partner reached asynchronously: submit, poll, read each answer."""

    #: The first pause of a task's in-process wait for the answer (then doubling up to a second):
    #: a partner that answers later than at submission is usually a slow one, and each poll of an
    #: API partner is a call per subject.
    first_poll_seconds: ClassVar[float] = 1.0

    def _each(self, call: Callable[[T], R], items: list[T]) -> list[R]:
        """``call`` over ``items``, up to :data:`PARALLEL_CALLS` at once, results in order; the
        first error raised (a ``TransientError`` for a partner that failed) propagates."""
        if len(items) < 2:
            return [call(item) for item in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(PARALLEL_CALLS, len(items))) as pool:
            return list(pool.map(call, items))

    @abstractmethod
    def submit(
        self,
        subjects: list[ResolvedSubject],
        request_type: str,
        label: str | None = None,
        details: dict[str, dict] | None = None,
    ) -> dict[str, list[str]]:
        """Send (idempotently) the subjects' requests; returns our request_id -> partner request ids.

        :param label: see :func:`partner_request_id`
        :param details: per request id, fields the request body carries besides the identities
            (a rectification's ``corrections``)
        """

    @abstractmethod
    def poll(self, refs: list[str]) -> dict[str, str]:
        """Partner request id -> ``pending``, ``completed`` or ``failed``."""

    def statuses_at_submit(self, refs: list[str]) -> dict[str, str] | None:
        """The statuses the partner gave with the submission itself, when its protocol gives them
        (then no poll is needed right after :meth:`submit`); None by default."""
        return None

    @abstractmethod
    def answer(self, ref: str) -> dict:
        """The completed answer of one partner request (``records``, ``affected``)."""

    @abstractmethod
    def failure(self, ref: str) -> str:
        """Why a failed partner request failed, redacted (:func:`partner_text`)."""

    def answers(self, refs: list[str]) -> dict[str, dict]:
        """Partner request id -> its completed answer, read side by side."""
        return dict(zip(refs, self._each(self.answer, refs), strict=True))

    def fetch(self, refs_by_request: dict[str, list[str]]) -> ExportResult:
        """Read every completed answer of the batch into one result."""
        read = self.answers([ref for refs in refs_by_request.values() for ref in refs])
        answers = Answers()
        for request_id, refs in refs_by_request.items():
            for ref in refs:
                answers.add(request_id, ref, read[ref])
        return answers.result(self.system)
