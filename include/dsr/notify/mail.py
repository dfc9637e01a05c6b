"""Sending mail: a message type that hides its recipient, and an SMTP transport.

:class:`SmtpHookTransport` sends with a client from the Airflow SMTP provider's ``SmtpHook`` and the
``dsr_smtp`` connection (in the demo: the SMTP sink of :mod:`include.demo.smtp_sink`). It
works inside tasks, deadline callbacks and plain Python alike: the hook resolves the
connection through the Task SDK, which reads ``AIRFLOW_CONN_DSR_SMTP`` first.

Recipients are personal data: they are never logged, never put in an exception message,
and never returned; only the message's ``ref`` (the left part of its ``Message-ID``
``<ref@dsr.fabconnect.example>``) identifies a sent mail, e.g. in the ledger.
"""

from __future__ import annotations

import email.policy
import email.utils
import logging
import smtplib
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

from include.dsr.core.errors import TerminalError, TransientError

log = logging.getLogger(__name__)

CONN_SMTP = "dsr_smtp"
MESSAGE_ID_DOMAIN = "dsr.fabconnect.example"


def new_message_ref() -> str:
    """A random id for a message (no host name, no identity in it)."""
    return uuid.uuid4().hex


def check_address(address: object, what: str) -> str:
    """The trimmed address.

    :raises TerminalError: not an address (the message does not quote the value).
    """
    if not isinstance(address, str) or address.count("@") != 1 or any(c.isspace() for c in address.strip()):
        raise TerminalError(f"{what} is not a single email address; fix it and send again")
    local, _, domain = address.strip().partition("@")
    if not local or "." not in domain:
        raise TerminalError(f"{what} is not a single email address; fix it and send again")
    return address.strip()


@dataclass(frozen=True)
class Mail:
    """One HTML message; ``repr`` leaves the recipient out."""

    to: str = field(repr=False)
    subject: str
    html: str = field(repr=False)
    sender: str
    #: Recorded in the ledger; the ``Message-ID`` header is ``<ref@dsr.fabconnect.example>``.
    ref: str = field(default_factory=new_message_ref)

    @property
    def message_id(self) -> str:
        """The ``Message-ID`` header."""
        return f"<{self.ref}@{MESSAGE_ID_DOMAIN}>"


class MailTransport(Protocol):
    """Anything that can deliver a :class:`Mail` (raises :class:`TransientError` to retry).

    A transport may also offer ``send_all(mails)``: deliver them all, in any order, raising the
    error of the first mail (in the given order) that failed.
    """

    def send(self, mail: Mail) -> None: ...


#: Connections a wave's chunk of notices is sent over side by side: an SMTP mail is four round
#: trips, and a server answers one connection's commands while another's are on the way.
SEND_CONNECTIONS = 4
#: Below this many mails a chunk goes over the one connection of the session.
SEND_SIDE_BY_SIDE_FROM = 8


class SmtpHookTransport:
    """Send over SMTP with a client from the Airflow SMTP provider's ``SmtpHook``.

    Internationalised addresses (non-ASCII local part or domain) go out with the
    ``SMTPUTF8`` extension; a server that does not offer it gets no half-encoded message:
    the send fails with a :class:`TerminalError` that says so.

    :param conn_id: the SMTP connection (its extra may set ``from_email``, ``disable_ssl``,
        ``disable_tls``, ``timeout``, ``retry_limit``).
    """

    # Override to use another connection by default.
    default_conn_id = CONN_SMTP

    def __init__(self, conn_id: str | None = None) -> None:
        self.conn_id = conn_id or self.default_conn_id
        self._open: tuple[Any, str | None] | None = None

    @contextmanager
    def session(self) -> Iterator[SmtpHookTransport]:
        """Send every mail of the block over one SMTP connection (a wave's thousands of notices);
        a connection lost on the way is opened again for the next mail."""
        from include.dsr.connections import smtp_client

        if self._open is not None:
            yield self
            return
        try:
            with smtp_client(self.conn_id) as opened:
                self._open = opened
                yield self
        finally:
            self._open = None

    def _deliver(self, mail: Mail) -> None:
        from include.dsr.connections import smtp_client

        if self._open is not None:
            client, from_email = self._open
            try:
                client.send_message(build_message(mail, from_email or mail.sender))
                return
            except smtplib.SMTPServerDisconnected:
                self._open = None  # the server hung up: this mail goes on a connection of its own
        with smtp_client(self.conn_id) as (client, from_email):
            client.send_message(build_message(mail, from_email or mail.sender))

    def send_all(self, mails: Sequence[Mail]) -> None:
        """Deliver ``mails`` over up to :data:`SEND_CONNECTIONS` connections side by side (the first
        is the session's own, when one is open).

        Once a mail fails, no connection starts another; the error of the first failed mail, in
        the order given, is raised with what :meth:`send` raises (mails already delivered stay
        delivered: the caller sends the unrecorded ones again).
        """
        if len(mails) < SEND_SIDE_BY_SIDE_FROM:
            for mail in mails:
                self.send(mail)
            return
        from concurrent.futures import ThreadPoolExecutor

        lanes = [mails[i::SEND_CONNECTIONS] for i in range(SEND_CONNECTIONS)]
        failed = threading.Event()

        def send_lane(lane_and_transport: tuple[Sequence[Mail], SmtpHookTransport]) -> tuple[Mail, Exception] | None:
            lane, transport = lane_and_transport
            with transport.session():
                for mail in lane:
                    if failed.is_set():
                        return None
                    try:
                        transport.send(mail)
                    except (TerminalError, TransientError) as exc:
                        failed.set()
                        return mail, exc
            return None

        transports = [self, *(type(self)(self.conn_id) for _ in lanes[1:])]
        with ThreadPoolExecutor(len(lanes)) as pool:
            failures = [f for f in pool.map(send_lane, zip(lanes, transports, strict=True)) if f is not None]
        if failures:
            order = {id(mail): i for i, mail in enumerate(mails)}
            raise min(failures, key=lambda failure: order[id(failure[0])])[1]

    def send(self, mail: Mail) -> None:
        """Deliver ``mail``; the connection's ``from_email`` wins over ``mail.sender``.

        :raises TerminalError: no such connection, the server refused the recipient, or the
            address needs SMTPUTF8 and the server does not offer it.
        :raises TransientError: the server could not be reached or failed.
        """
        try:
            self._deliver(mail)
        except smtplib.SMTPNotSupportedError:
            raise TerminalError(
                f"mail {mail.ref}: the address needs SMTPUTF8, which the SMTP server of "
                f"{self.conn_id!r} does not offer; send the notice by another channel "
                "and record it"
            ) from None
        except smtplib.SMTPRecipientsRefused:
            # The exception carries the address: do not chain it into logs.
            raise TerminalError(f"mail {mail.ref}: the SMTP server refused the recipient") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientError(
                f"mail {mail.ref}: SMTP via {self.conn_id!r} failed ({type(exc).__name__}); will retry"
            ) from None
        log.info("mail %s sent through %s", mail.ref, self.conn_id)


def build_message(mail: Mail, sender: str) -> EmailMessage:
    """The MIME message of ``mail``: UTF-8 headers and body, an HTML part and its text fallback."""
    international = not (mail.to.isascii() and sender.isascii())
    message = EmailMessage(policy=email.policy.SMTPUTF8 if international else email.policy.SMTP)
    message["Subject"] = mail.subject
    message["From"] = sender
    message["To"] = mail.to
    message["Message-ID"] = mail.message_id
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(html_to_text(mail.html))
    message.add_alternative(mail.html, subtype="html")
    return message


def html_to_text(html: str) -> str:
    """A readable plain-text rendering of a notice (mail clients that show no HTML)."""
    import html as html_lib
    import re

    text = re.sub(r"(?is)<(script|style).*?</\1>", "", html)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</li>|</h[1-6]>|</tr>", "\n", text)
    text = re.sub(r"(?i)<a\s[^>]*href=\"([^\"]*)\"[^>]*>(.*?)</a>", r"\2 (\1)", text)
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", text))
    return "\n".join(line.strip() for line in text.splitlines() if line.strip()) + "\n"
