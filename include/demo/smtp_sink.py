"""The demo's mail server: a real SMTP server on 127.0.0.1 that keeps every mail as a file.

Each message it accepts is written to ``<demo dir>/mail/<time>-<id>.eml`` (the raw message
as received), so tests and people read what the product sent with any mail client or with
:func:`read_mail`. It relays nothing. Start it in-process with :func:`start_smtp_sink`
(tests pass a free port) or as ``python -m include.demo.services smtp``.
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from include import settings

log = logging.getLogger(__name__)


def default_mail_dir() -> Path:
    """``<demo dir>/mail``."""
    return settings.DEMO_DIR / "mail"


class MailDirHandler:
    """aiosmtpd handler: one ``.eml`` file per message, written atomically."""

    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir

    async def handle_DATA(self, server, session, envelope) -> str:
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.eml"
        partial = self.mail_dir / f".{name}.part"
        partial.write_bytes(envelope.original_content or envelope.content)
        os.replace(partial, self.mail_dir / name)
        log.info("smtp sink: stored message %s for %s recipient(s)", name, len(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class SmtpSink:
    """An SMTP server on ``host:port`` storing messages under ``mail_dir``; call :meth:`stop`.

    :param smtputf8: offer the SMTPUTF8 extension (internationalised addresses), as modern
        servers do; tests switch it off to play an old server.
    """

    def __init__(
        self, port: int | None = None, mail_dir: Path | None = None, host: str = "127.0.0.1", smtputf8: bool = True
    ) -> None:
        self.smtputf8 = smtputf8
        self.host = host
        self.port = settings.SMTP_PORT if port is None else port
        self.mail_dir = mail_dir or default_mail_dir()
        self._controller = None

    def start(self) -> SmtpSink:
        """Start serving in a background thread; returns once the port accepts connections."""
        from aiosmtpd.controller import Controller

        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every recipient at INFO
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(
            MailDirHandler(self.mail_dir),
            hostname=self.host,
            port=self.port,
            ready_timeout=10,
            enable_SMTPUTF8=self.smtputf8,
        )
        self._controller.start()
        log.info("SMTP sink on %s:%s, mail in %s", self.host, self.port, self.mail_dir)
        return self

    def stop(self) -> None:
        """Stop the server (the stored mail stays)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[EmailMessage]:
        """Every stored message, oldest first."""
        return read_mail(self.mail_dir)


def start_smtp_sink(port: int | None = None, mail_dir: Path | None = None) -> SmtpSink:
    """Start an :class:`SmtpSink` (default port ``DSR_SMTP_PORT``, default dir ``<demo dir>/mail``)."""
    return SmtpSink(port=port, mail_dir=mail_dir).start()


def read_mail(mail_dir: Path | None = None) -> list[EmailMessage]:
    """Parse the ``.eml`` files of ``mail_dir`` (default ``<demo dir>/mail``), oldest first."""
    folder = mail_dir or default_mail_dir()
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.eml"))
    return [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]
