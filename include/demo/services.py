"""The demo's embedded servers, each a real server on 127.0.0.1.

``python -m include.demo.services s3`` runs the S3-compatible server (moto's S3 backend behind waitress).
``python -m include.demo.services partners`` runs one HTTP server per ``api`` partner and a
responder per ``s3_dropbox`` partner, over the partner copies of the built demo world.
``python -m include.demo.services smtp`` runs the SMTP sink that keeps every mail the product
sends as an ``.eml`` file in ``<demo dir>/mail/`` (port ``DSR_SMTP_PORT``).
Ports and tokens come from the demo connections (``airflow_settings.yaml``), so the DAGs and
the simulators cannot disagree. All run until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from include import settings
from include.demo.airflow_env import demo_connections
from include.demo.world import WorldPaths, s3_client_for

log = logging.getLogger("demo.services")


def s3_endpoint() -> str:
    return f"http://127.0.0.1:{settings.S3_PORT}"


def _channel_class():
    """waitress's connection handler, minus one bug: a request with ``Expect: 100-continue`` and
    an empty body (botocore sends that for an empty ``PutObject``) got its ``100 Continue`` and
    then waited for a body that never comes. With nothing to send there is nothing to wait for."""
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser

    class EmptyBodyParser(HTTPRequestParser):
        def parse_header(self, header_plus: bytes) -> None:
            super().parse_header(header_plus)
            if not self.chunked and self.content_length == 0:
                self.expect_continue = False

    class Channel(HTTPChannel):
        parser_class = EmptyBodyParser

    return Channel


class S3Server:
    """moto's S3 backend alone behind waitress (path-style addressing, HTTP/1.1 keep-alive).

    moto's own server (``ThreadedMotoServer``) routes every request through a dispatcher that
    works out the AWS service from the host and signature under one lock, and werkzeug's
    development server closes the connection after every response: each S3 call then cost the
    client a new TCP connection and the server a new thread. waitress keeps connections open and
    serves from a fixed pool of threads (``bench/bench_s3_server.py`` measures the three).
    Unlike moto's werkzeug handler, waitress drops request headers with ``_`` in their name
    (``x-amz-meta-my_key``): the product sets no object metadata.
    """

    #: worker threads: a wave's package threads, the partner responders and the task processes
    THREADS = 16

    def __init__(self, port: int = settings.S3_PORT) -> None:
        from moto.moto_server.werkzeug_app import create_backend_app
        from waitress.server import create_server

        self._server = create_server(
            create_backend_app("s3"),
            host="127.0.0.1",
            port=port,
            threads=self.THREADS,
            # Every task process keeps a few connections open: allow many, and close idle ones
            # sooner than waitress's 120 s so a crowd of finished processes frees its slots.
            connection_limit=1000,
            asyncore_use_poll=True,  # select() stops at file descriptor 1023, below that limit
            channel_timeout=30,
            max_request_body_size=5 * 1024**3,  # S3's limit for one PUT (waitress's default is 1 GiB)
            ident="fabconnect-demo-s3",
        )
        self._server.channel_class = _channel_class()
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._server.run, name="s3-server", daemon=True)
        self._stopped = False

    def start(self) -> S3Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection, from waitress's own loop thread
        (closing them from here would pull sockets from under its ``select``); the loop ends
        when no socket is left, then the worker threads stop."""
        server = self._server
        if self._stopped:
            return
        self._stopped = True

        def close_all() -> None:
            for dispatcher in list(server._map.values()):  # waitress has no public stop
                dispatcher.close()

        if self._thread.is_alive():
            server.trigger.pull_trigger(close_all)
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                log.warning("S3 server on port %s: its loop did not end within 10 s of stop()", self.port)
        else:  # never started: no loop to race with
            close_all()
        server.task_dispatcher.shutdown()


def start_s3_server(port: int = settings.S3_PORT) -> S3Server:
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" at every burst otherwise
    server = S3Server(port).start()
    log.info("S3-compatible server on http://127.0.0.1:%s", server.port)
    return server


def start_partner_simulators(paths: WorldPaths, endpoint: str) -> list:
    """Start every partner simulator the data map declares; returns objects with ``stop()``."""
    from include.demo.partners.api_server import PartnerApiServer
    from include.demo.partners.dropbox_responder import DropboxResponder
    from include.dsr.core.data_map import load_data_map

    conns = demo_connections()
    running = []
    for system in load_data_map().partners():
        store = paths.partner_db(system.key)
        if system.channel == "api":
            conn = conns[system.connection_id]
            server = PartnerApiServer(system.key, store, token=conn["password"], port=conn["port"])
            server.start()
            running.append(server)
        elif system.channel == "s3_dropbox":
            responder = DropboxResponder(
                system.key, store, system.channel_config["bucket"], lambda: s3_client_for(endpoint)
            )
            responder.start()
            running.append(responder)
    log.info("%s partner simulators running", len(running))
    return running


def _serve_until_signal(stoppables: list) -> None:
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    for item in reversed(stoppables):
        item.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the demo world's embedded servers")
    parser.add_argument("which", choices=("s3", "partners", "smtp"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.which == "s3":
        _serve_until_signal([start_s3_server()])
    elif args.which == "smtp":
        from include.demo.smtp_sink import start_smtp_sink

        _serve_until_signal([start_smtp_sink()])
    else:
        _serve_until_signal(start_partner_simulators(WorldPaths(settings.DEMO_DIR), s3_endpoint()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
