"""A real ``airflow api-server`` in a subprocess, for the e2e tests that talk HTTP to it.

The server runs the core apps with one worker on a free port, with the test session's
``AIRFLOW_HOME`` and metadata DB (tests/conftest.py) and the demo login's password file;
callers add their own environment (a ledger connection, ...). It runs in its own process
group, so stopping it stops its workers too.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from include.demo.airflow_env import write_passwords_file

#: Seconds the api-server gets to answer its health route.
START_TIMEOUT = 240
#: Name of the server's log file in the work directory.
LOG_NAME = "api-server.log"


def free_port() -> int:
    """A free port below the ephemeral range (as tests/conftest.py picks its ports)."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


def wait_until_up(proc: subprocess.Popen, base_url: str, log: Path, timeout: float = START_TIMEOUT) -> None:
    """Wait until ``GET /api/v2/monitor/health`` answers 200.

    :raises RuntimeError: the server exited or is not up after ``timeout`` seconds; the
        message ends with the tail of its log.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"api-server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{base_url}/api/v2/monitor/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise RuntimeError(f"api-server not up after {timeout} s:\n{log.read_text()[-4000:]}")


@contextmanager
def running_api_server(workdir: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Start ``airflow api-server``, wait until it is up, stop it at exit.

    :param workdir: where the server's log goes (``api-server.log``).
    :param extra_env: variables added to the test process's environment for the server.
    :returns: the server's base URL (``http://127.0.0.1:<port>``).
    """
    write_passwords_file(Path(os.environ["AIRFLOW_HOME"]))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **(extra_env or {}), "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__BASE_URL": base_url}
    log = workdir / LOG_NAME
    command = [
        sys.executable,
        "-m",
        "airflow",
        "api-server",
        "--apps",
        "core",
        "-H",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_up(proc, base_url, log)
        yield base_url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
