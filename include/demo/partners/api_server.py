"""HTTP partner simulator (channel ``api``), shaped after OpenDSR 0.1.

Protocol routes (JSON; ``Authorization: Bearer <token>`` required, else 401):

- ``GET /opendsr/discovery``: API version, request types and identity types supported.
- ``POST /opendsr/requests``: submit a request; 202 with its status. Idempotent on
  ``subject_request_id``; the same id for another request is 409; a bad body is 400.
- ``GET /opendsr/requests/{id}``: its status (404 if unknown).
- ``GET /opendsr/requests/{id}/result``: ``records`` and ``affected`` once completed, else 409.

Admin routes (no token, loopback clients only): ``PUT /_admin/faults`` (body: ``Faults``
fields), ``POST /_admin/clock`` (``{"advance_hours": h}``), ``GET /_admin/state``.
Faults act on authenticated protocol calls. Logs name request ids, types and counts only.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from include.demo.partners.faults import Faults, SimClock
from include.demo.partners.protocol import RequestBook, RequestConflict, leaky_error, parse_request
from include.demo.partners.store import IDENTITY_TYPES, REQUEST_TYPES, PartnerStore

log = logging.getLogger(__name__)

DISCOVERY = {
    "api_version": "0.1",
    "supported_subject_request_types": list(REQUEST_TYPES),
    "supported_identities": list(IDENTITY_TYPES),
}
STATUS_FIELDS = ("subject_request_id", "request_status", "received_time", "expected_completion_time", "completed_time")

_ROUTES = (
    ("GET", re.compile(r"/opendsr/discovery"), "_discovery"),
    ("POST", re.compile(r"/opendsr/requests"), "_submit"),
    ("GET", re.compile(r"/opendsr/requests/(?P<request_id>[^/]+)"), "_status"),
    ("GET", re.compile(r"/opendsr/requests/(?P<request_id>[^/]+)/result"), "_result"),
    ("PUT", re.compile(r"/_admin/faults"), "_put_faults"),
    ("POST", re.compile(r"/_admin/clock"), "_advance_clock"),
    ("GET", re.compile(r"/_admin/state"), "_state"),
)


def _route(method: str, path: str) -> tuple[str, re.Match] | None:
    """(handler name, path match) of the route serving ``method path``, or None."""
    for verb, pattern, name in _ROUTES:
        match = pattern.fullmatch(path)
        if match and verb == method:
            return name, match
    return None


class PartnerApiServer:
    """A partner's OpenDSR-style HTTP API over its SQLite copy, with fault knobs.

    Set ``server.faults = Faults(...)`` or call ``server.clock.advance(hours)`` in-process,
    or use the admin routes remotely.

    :param slug: the partner's slug (used in logs and thread names).
    :param store_path: the partner's SQLite file.
    :param token: the bearer token clients must send.
    :param host: interface to bind.
    :param port: port to bind; 0 picks a free one (see :meth:`start`).
    :param faults: initial faults (default: behave).
    """

    def __init__(
        self,
        slug: str,
        store_path: str | Path,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        self.slug = slug
        self.token = token
        self.host = host
        self.port = port
        self.faults = faults if faults is not None else Faults()
        self.clock = SimClock()
        self.book = RequestBook(PartnerStore(store_path), self.clock)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        if self._httpd is None:
            raise RuntimeError(f"partner {self.slug} API is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> int:
        """Serve in a background thread.

        :returns: the bound port.
        """
        if self._httpd is not None:
            raise RuntimeError(f"partner {self.slug} API is already started")
        self._stopping.clear()
        self._httpd = _HttpServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"partner-api-{self.slug}",
            daemon=True,
        )
        self._thread.start()
        log.info("partner %s API listening on %s", self.slug, self.url)
        return self.port

    def stop(self) -> None:
        """Stop serving; calls still stalled are released with a 500."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None
        log.info("partner %s API stopped", self.slug)

    def __enter__(self) -> PartnerApiServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def state(self) -> dict[str, Any]:
        """Faults, clock and request count, as ``GET /_admin/state`` returns them."""
        return {
            "slug": self.slug,
            "faults": self.faults.to_dict(),
            "clock": self.clock.to_dict(),
            "requests": self.book.count(),
        }

    def _admit(self) -> bool:
        """Apply the faults to one protocol call: stall if asked; False if it must fail."""
        if self.faults.mode == "stall":
            self._stopping.wait(self.faults.stall_seconds)
        with self._lock:
            failing = self.faults.mode == "fail"
            if failing:
                self.faults = self.faults.after_failure()
        return not failing and not self._stopping.is_set()


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], partner: PartnerApiServer) -> None:
        self.partner = partner
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # the client gave up (timeout)
            log.debug("partner %s: client disconnected", self.partner.slug)
        else:
            log.exception("partner %s: error serving a call", self.partner.slug)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    # Keep-alive, as a partner's API behind any web server would: the product's client keeps one
    # connection per thread, where HTTP/1.0 cost it and this server a connection (and a thread) per call.
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds an idle kept-alive connection is held before the server closes it
    # Headers and body go out as two writes: with Nagle's algorithm the body waited for the
    # client's delayed ACK, 40 ms a call on a kept-alive connection (1.3 ms without).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("partner %s: " + format, self.server.partner.slug, *args)

    def _dispatch(self, method: str) -> None:
        partner = self.server.partner
        # Read the whole body first, whatever the answer: on a kept-alive connection an unread
        # body would be taken for the next request.
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:  # where the body ends is unknown: answer, and read nothing more
            return self._send(400, {"error": "Content-Length is not a number"}, close=True)
        self._body = self.rfile.read(length)
        path = unquote(urlsplit(self.path).path)
        routed = next(
            ((name, m) for verb, pattern, name in _ROUTES if verb == method and (m := pattern.fullmatch(path))), None
        )
        if routed is None:
            return self._send(404, {"error": f"no route for {method} {path}"})
        handler, match = routed
        if path.startswith("/opendsr/"):
            if not hmac.compare_digest(self.headers.get("Authorization", ""), f"Bearer {partner.token}"):
                return self._send(401, {"error": "missing or invalid bearer token"})
            if not partner._admit():
                return self._send(500, {"error": "simulated partner failure"})
        elif not ipaddress.ip_address(self.client_address[0]).is_loopback:
            return self._send(403, {"error": "admin routes answer loopback clients only"})
        try:
            status, body = getattr(self, handler)(partner, **match.groupdict())
        except RequestConflict as exc:
            status, body = 409, {"error": str(exc)}
        except ValueError as exc:
            status, body = 400, {"error": str(exc)}
        except Exception:
            log.exception("partner %s: %s %s failed", partner.slug, method, handler)
            status, body = 500, {"error": "internal error"}
        self._send(status, body)

    def _send(self, status: int, body: dict[str, Any], close: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")  # the server closes it after this answer
        self.end_headers()
        self.wfile.write(data)

    def _json_body(self) -> Any:
        try:
            return json.loads(self._body or b"null")
        except ValueError:
            raise ValueError("body is not valid JSON") from None

    def _discovery(self, partner: PartnerApiServer) -> tuple[int, dict]:
        return 200, DISCOVERY

    def _submit(self, partner: PartnerApiServer) -> tuple[int, dict]:
        request = parse_request(self._json_body())
        if partner.faults.mode == "leak":
            return 422, {"error": leaky_error(request, partner.book.store)}
        found = partner.book.submit(
            request.subject_request_id,
            request.request_type,
            request.identities,
            partner.faults,
            request.corrections,
        )
        return 202, {key: found[key] for key in STATUS_FIELDS}

    def _status(self, partner: PartnerApiServer, request_id: str) -> tuple[int, dict]:
        found = partner.book.get(request_id)
        if found is None:
            return 404, {"error": f"unknown subject_request_id {request_id}"}
        return 200, {key: found[key] for key in STATUS_FIELDS}

    def _result(self, partner: PartnerApiServer, request_id: str) -> tuple[int, dict]:
        found = partner.book.get(request_id)
        if found is None:
            return 404, {"error": f"unknown subject_request_id {request_id}"}
        if found["request_status"] != "completed":
            return 409, {"error": "not completed", "request_status": found["request_status"]}
        return 200, {key: found[key] for key in ("subject_request_id", "request_type", "records", "affected")}

    def _put_faults(self, partner: PartnerApiServer) -> tuple[int, dict]:
        partner.faults = Faults.from_dict(self._json_body())
        log.info("partner %s: faults set to mode %s", partner.slug, partner.faults.mode)
        return 200, partner.faults.to_dict()

    def _advance_clock(self, partner: PartnerApiServer) -> tuple[int, dict]:
        body = self._json_body()
        if not isinstance(body, dict) or "advance_hours" not in body:
            raise ValueError("advance_hours is required")
        partner.clock.advance(body["advance_hours"])
        return 200, partner.clock.to_dict()

    def _state(self, partner: PartnerApiServer) -> tuple[int, dict]:
        return 200, partner.state()
