"""Art. 20(2): send a portability package straight to another controller.

The body is ``{"schema": ..., "data": ..., "manifest": ...}`` as UTF-8 JSON with an
RFC 9530 ``Content-Digest`` header. It goes only to a declared receiving controller, over
HTTPS (:mod:`include.dsr.core.receivers`), and never follows a redirect.
Logs and error messages carry the host, status and byte count: never the body, the path
or the query string (which may hold the receiver's token); a filter also cuts query
strings out of urllib3's DEBUG lines, which would otherwise print them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from datetime import UTC, datetime
from urllib.parse import urlsplit

from include import settings
from include.dsr.core.errors import TerminalError, TransientError
from include.dsr.core.receivers import receiver_problem

log = logging.getLogger(__name__)

PARTS = ("schema", "data", "manifest")
RETRYABLE_4XX = {408, 425, 429}


class _RedactQuery(logging.Filter):
    """Cuts query strings out of urllib3's debug lines (``"POST /path?token=... HTTP/1.1"``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                a.split("?", 1)[0] + "?<redacted>" if isinstance(a, str) and "?" in a else a for a in record.args
            )
        return True


def _redact_urllib3_logs() -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactQuery) for f in logger.filters):
        logger.addFilter(_RedactQuery())


def transmit_package(url: str, package: dict, timeout: float = 30, declared: tuple[str, ...] | None = None) -> dict:
    """POST the package to ``url`` and return a receipt (no personal data, no URL).

    :param url: the receiving controller's endpoint (``transmit_to`` of the request)
    :param package: ``{"schema": ..., "data": ..., "manifest": ...}`` (``PackageResult.transmit_body()``)
    :param timeout: seconds for connecting and for reading the answer
    :param declared: the receiving controllers' endpoints (default ``settings.RECEIVING_CONTROLLERS``)
    :returns: ``{"status_code", "bytes", "sha256", "host", "sent_at"}``
    :raises TransientError: timeout, connection failure, 5xx, 408/425/429 (retry later)
    :raises TerminalError: bad URL or package, 3xx (redirects are not followed), other 4xx
    """
    import requests

    host = _check_url(url, declared)
    _redact_urllib3_logs()
    missing = [part for part in PARTS if part not in package]
    if missing:
        raise TerminalError(f"portability package lacks {missing}; build it with right='portability'")
    body = json.dumps({part: package[part] for part in PARTS}, ensure_ascii=False).encode("utf-8")
    digest = hashlib.sha256(body).digest()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Content-Digest": f"sha-256=:{base64.b64encode(digest).decode()}:",
    }
    try:
        response = requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.Timeout:
        raise TransientError(f"transmission to {host} timed out after {timeout}s") from None
    except requests.RequestException as exc:  # its message holds the full URL: do not chain it
        raise TransientError(f"transmission to {host} failed: {type(exc).__name__}") from None
    status = response.status_code
    log.info("transmitted %s bytes to %s: HTTP %s", len(body), host, status)
    if status >= 500 or status in RETRYABLE_4XX:
        raise TransientError(f"{host} answered HTTP {status}; retry later")
    if 300 <= status < 400:
        raise TerminalError(
            f"{host} answered HTTP {status} (redirect); redirects are not followed with "
            "personal data: ask the receiver for its final endpoint"
        )
    if status >= 400:
        raise TerminalError(f"{host} refused the package with HTTP {status}; check the endpoint and its format")
    return {
        "status_code": status,
        "bytes": len(body),
        "sha256": digest.hex(),
        "host": host,
        "sent_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _check_url(url: str, declared: tuple[str, ...] | None) -> str:
    """The URL's host (for logs); refuses anything but a declared receiver's https endpoint."""
    problem = receiver_problem(url, settings.RECEIVING_CONTROLLERS if declared is None else declared)
    if problem:
        raise TerminalError(problem)
    return urlsplit(url).hostname or ""
