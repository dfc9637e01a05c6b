"""Wait until a local service answers, failing fast if the process that serves it died."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def wait_for_port(host: str, port: int, timeout: float, alive: Callable[[], None] | None = None) -> None:
    """Block until ``host:port`` accepts TCP connections.

    :param alive: called between tries; raises if the serving process is gone
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if alive:
                alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.2)


def wait_for_http(url: str, timeout: float, alive: Callable[[], None] | None = None) -> None:
    """Block until ``url`` answers with a status below 500."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local URL
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except (urllib.error.URLError, OSError):
            pass
        if alive:
            alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout}s")
        time.sleep(0.5)
