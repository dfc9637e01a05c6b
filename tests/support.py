"""Helpers shared by every test package: a settable clock, free ports, a real SMTP sink behind ``dsr_smtp``,
botocore event hooks."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from include.demo.smtp_sink import SmtpSink


class Clock:
    """A settable clock for :class:`Ledger` and :class:`Notices` (``clock.now = ...`` moves it)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def botocore_hook(client, event: str, handler: Callable) -> Iterator[None]:
    """``handler`` hooked to a boto3 ``client``'s botocore ``event`` while the block runs."""
    client.meta.events.register(event, handler)
    try:
        yield
    finally:
        client.meta.events.unregister(event, handler)


def free_port() -> int:
    """A port where nothing listens (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def smtp_connection(port: int) -> str:
    """``AIRFLOW_CONN_DSR_SMTP`` for a plain (no TLS) SMTP server on 127.0.0.1."""
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {
                "from_email": "privacy@example.com",
                "disable_ssl": True,
                "disable_tls": True,
                "retry_limit": 0,
                "timeout": 5,
            },
        }
    )


def run_smtp_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpSink]:
    """A real SMTP server on a free port behind the ``dsr_smtp`` connection (``yield from`` it in a fixture)."""
    server = SmtpSink(port=free_port(), mail_dir=tmp_path / "mail").start()
    monkeypatch.setenv("AIRFLOW_CONN_DSR_SMTP", smtp_connection(server.port))
    yield server
    server.stop()


class TcpProxy:
    """A TCP forwarder to ``target`` that can be cut: while ``down``, connections are refused
    (accepted and closed at once) and open ones are dropped. Stands in for a server that goes away."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        import socket
        import threading

        self.target = (host, target_port)
        self.down = False
        self._server = socket.create_server((host, 0))
        self.port = self._server.getsockname()[1]
        self._open: set = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.target[0]}:{self.port}"

    def cut(self) -> None:
        self.down = True
        with self._lock:
            for sock in list(self._open):
                _close(sock)
            self._open.clear()

    def restore(self) -> None:
        self.down = False

    def stop(self) -> None:
        self.cut()
        _close(self._server)

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.down:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source, sink) -> None:
        try:
            while data := source.recv(65536):
                if self.down:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock) -> None:
    import socket

    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
