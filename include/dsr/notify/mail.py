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
from contextlib import ExitStack, contextmanager
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
    error of the first mail (in the given order) among those that failed.
    """

    def send(self, mail: Mail) -> None: ...


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
        # the session's further connections for send_all: opened on first use, closed with it
        self._lanes: ExitStack | None = None
        self._lane_transports: list[SmtpHookTransport] = []

    @contextmanager
    def session(self) -> Iterator[SmtpHookTransport]:
        """Send every mail of the block over the session's connections (a wave's thousands of
        notices): one, and for :meth:`send_all` up to ``DSR_SMTP_CONNECTIONS``; a connection lost
        on the way is opened again for the next mail.

        :raises TransientError: the server could not be reached.
        """
        from include.dsr.connections import smtp_client

        if self._open is not None:
            yield self
            return
        try:
            with ExitStack() as lanes:
                try:
                    self._open = lanes.enter_context(smtp_client(self.conn_id))
                except (smtplib.SMTPException, OSError) as exc:
                    raise TransientError(
                        f"SMTP via {self.conn_id!r} could not be reached ({type(exc).__name__}); will retry"
                    ) from None
                self._lanes = lanes
                yield self
        finally:
            self._open, self._lanes, self._lane_transports = None, None, []

    def _further_lanes(self, wanted: int) -> list[SmtpHookTransport]:
        """Up to ``wanted`` transports with a connection of their own, kept for the session; fewer
        when the server refuses another connection (the mails then share the ones there are)."""
        if self._lanes is None:
            return []
        while len(self._lane_transports) < wanted:
            lane = type(self)(self.conn_id)
            try:
                self._lanes.enter_context(lane.session())
            except (TransientError, TerminalError):
                log.info("SMTP via %s: %s connections open, no more", self.conn_id, 1 + len(self._lane_transports))
                break
            self._lane_transports.append(lane)
        return self._lane_transports[:wanted]

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
        """Deliver ``mails`` over the session's connections side by side (opening one first when
        no session is open): an SMTP mail is four round trips, and a server answers one
        connection's commands while another's are on the way.

        Once a mail fails, no connection starts another; the error of the first failed mail, in
        the order given, is raised as :meth:`send` raises it (mails already delivered stay
        delivered: the caller sends the unrecorded ones again).
        """
        from include import settings

        if len(mails) < SEND_SIDE_BY_SIDE_FROM or settings.SMTP_CONNECTIONS < 2:
            for mail in mails:
                self.send(mail)
            return
        if self._open is None:
            with self.session():
                self.send_all(mails)
            return
        from concurrent.futures import ThreadPoolExecutor

        transports = [self, *self._further_lanes(settings.SMTP_CONNECTIONS - 1)]
        lanes = [mails[i :: len(transports)] for i in range(len(transports))]
        failed = threading.Event()

        def send_lane(lane: Sequence[Mail], transport: SmtpHookTransport) -> tuple[Mail, Exception] | None:
            for mail in lane:
                if failed.is_set():
                    return None
                try:
                    transport.send(mail)
                except (TerminalError, TransientError) as exc:
                    failed.set()
                    return mail, exc
                except BaseException:
                    failed.set()
                    raise
            return None

        try:
            with ThreadPoolExecutor(len(lanes)) as pool:
                failures = [f for f in pool.map(send_lane, lanes, transports) if f is not None]
        finally:
            failed.set()  # whatever ended the wait (an error, the task being stopped): no lane goes on
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
