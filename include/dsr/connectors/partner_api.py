"""Connector for partners with an HTTP DSR API (channel ``api``, OpenDSR 0.1 shape).

The conversation is asynchronous: ``submit`` posts one request per subject (idempotent on
the partner request id, which is derived from our ``request_id`` and never contains
personal data), ``poll`` reads their statuses, ``answer`` / ``fetch`` read completed results
(:mod:`include.dsr.connectors.partner`). 5xx, timeouts and connection errors raise
``TransientError`` (Airflow retries with backoff); 4xx raise ``TerminalError`` with the
partner's message, redacted. The bearer token is the connection's password.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from include import settings
from include.dsr.connectors.base import ExportResult
from include.dsr.connectors.partner import (
    COMPLETED,
    PartnerConnector,
    identity_sets,
    partner_refs,
    partner_text,
)
from include.dsr.core.errors import TerminalError, TransientError

if TYPE_CHECKING:
    from include.dsr.core.data_map import System
    from include.dsr.identity.resolver import ResolvedSubject

log = logging.getLogger(__name__)


class PartnerApiConnector(PartnerConnector):
    """:param base_url: / :param token: override the connection (tests)."""

    channel: ClassVar[str] = "api"
    capabilities: ClassVar[frozenset[str]] = frozenset({"test_connection", "export"})
    # Override for partners that mount the API elsewhere.
    api_prefix: ClassVar[str] = "/opendsr"

    def __init__(
        self, system: System, base_url: str | None = None, token: str | None = None, timeout: float | None = None
    ) -> None:
        super().__init__(system)
        self._base_url, self._token = base_url, token
        self.timeout = timeout or settings.PARTNER_HTTP_TIMEOUT
        self._submitted: dict[str, str | None] = {}  # partner request id -> status its POST answered

    @cached_property
    def _endpoint(self) -> tuple[str, str]:
        if self._base_url:
            return self._base_url.rstrip("/"), self._token or ""
        from include.dsr.connections import get_connection

        conn = get_connection(self.system.connection_id)
        port = f":{conn.port}" if conn.port else ""
        return f"{conn.schema or 'https'}://{conn.host}{port}", conn.password or ""

    @cached_property
    def _sessions(self) -> tuple[threading.local, list]:
        return threading.local(), []

    @property
    def session(self):
        """This thread's HTTP session (``requests.Session`` is not made to be shared by threads)."""
        import requests

        local, every = self._sessions
        if getattr(local, "session", None) is None:
            local.session = requests.Session()
            local.session.headers["Authorization"] = f"Bearer {self._endpoint[1]}"
            every.append(local.session)
        return local.session

    def _call(self, method: str, path: str, body: dict | None = None, ok=(200, 201, 202)) -> tuple[int, Any]:
        import requests

        url = f"{self._endpoint[0]}{self.api_prefix}{path}"
        try:
            resp = self.session.request(method, url, json=body, timeout=self.timeout)
        except requests.Timeout as exc:
            raise TransientError(
                f"partner {self.system.key} did not answer {method} {path} within {self.timeout}s"
            ) from exc
        except requests.ConnectionError as exc:
            raise TransientError(f"partner {self.system.key} unreachable at {self._endpoint[0]}") from exc
        if resp.status_code >= 500:
            raise TransientError(f"partner {self.system.key} answered {resp.status_code} to {method} {path}")
        if resp.status_code not in ok:
            detail = _error_text(resp)
            raise TerminalError(f"partner {self.system.key} refused {method} {path} ({resp.status_code}): {detail}")
        return resp.status_code, resp.json()

    def test_connection(self) -> None:
        _, body = self._call("GET", "/discovery")
        if body.get("api_version") != "0.1":
            raise TerminalError(f"partner {self.system.key} speaks API version {body.get('api_version')!r}, not 0.1")

    def submit(
        self,
        subjects: list[ResolvedSubject],
        request_type: str,
        label: str | None = None,
        details: dict[str, dict] | None = None,
    ) -> dict[str, list[str]]:
        """Post the subjects' requests (idempotent); returns our request_id -> partner request ids."""
        refs: dict[str, list[str]] = {}
        bodies = []
        for subject in subjects:
            refs[subject.request_id] = partner_refs(subject, request_type, label)
            for ref, identities in zip(refs[subject.request_id], identity_sets(subject), strict=True):
                bodies.append(
                    {
                        "subject_request_id": ref,
                        "subject_request_type": request_type,
                        "subject_identities": identities,
                        "submitted_time": datetime.now(UTC).isoformat(),
                        **(details or {}).get(subject.request_id, {}),
                    }
                )
        answers = self._each(lambda body: self._call("POST", "/requests", body)[1], bodies)
        # The partner answers each POST with the request's status: the poll that would follow
        # at once would read the same thing again (one GET a subject in a wave).
        self._submitted.update(
            (body["subject_request_id"], answer.get("request_status") if isinstance(answer, dict) else None)
            for body, answer in zip(bodies, answers, strict=True)
        )
        log.info("submitted %s %s requests to %s", sum(map(len, refs.values())), request_type, self.system.key)
        return refs

    def statuses_at_submit(self, refs: list[str]) -> dict[str, str] | None:
        """Each ref's status as the partner answered its POST in :meth:`submit`, or None when one
        of them was not submitted by this connector or came without a status. The protocol's POST
        answers with the request as its status read would show it, so a ``completed`` here is
        trusted as a poll's would be."""
        found = {ref: self._submitted.get(ref) for ref in refs}
        if any(not isinstance(status, str) for status in found.values()):
            return None
        return found  # type: ignore[return-value]

    def poll(self, refs: list[str]) -> dict[str, str]:
        """Partner request id -> request_status (pending, in_progress, completed, failed)."""
        statuses = self._each(lambda ref: self._call("GET", f"/requests/{ref}")[1]["request_status"], refs)
        return dict(zip(refs, statuses, strict=True))

    def answer(self, ref: str) -> dict:
        return self._call("GET", f"/requests/{ref}/result")[1]

    def failure(self, ref: str) -> str:
        body = self._call("GET", f"/requests/{ref}")[1]
        return partner_text(body.get("error") or body.get("request_status") or "no reason given")

    def export(self, subjects: list[ResolvedSubject], collections=None) -> ExportResult:
        """Submit, and return the results if the partner answered at once; else raise ``PartnerPendingError``."""
        refs = self.submit(subjects, "access")
        statuses = self.poll([r for rs in refs.values() for r in rs])
        pending = [ref for ref, status in statuses.items() if status != COMPLETED]
        if pending:
            raise PartnerPendingError(self.system.key, pending)
        return self.fetch(refs)

    def close(self) -> None:
        if "_sessions" in self.__dict__:
            for session in self._sessions[1]:
                session.close()
            self.__dict__.pop("_sessions")


class PartnerPendingError(TransientError):
    """The partner accepted the request but has not answered yet."""

    def __init__(self, system: str, refs: list[str]) -> None:
        super().__init__(f"partner {system} has not answered {len(refs)} request(s) yet")
        self.system, self.refs = system, refs


def _error_text(resp) -> str:
    """The partner's error body, redacted: it may quote what we sent."""
    try:
        return partner_text(resp.json().get("error", resp.text))
    except ValueError:
        return partner_text(resp.text)
