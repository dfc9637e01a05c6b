"""Sending mail: a message type that hides its recipient, and an SMTP transport.

:class:`SmtpHookTransport` sends through the Airflow SMTP provider's ``SmtpHook`` and the
``dsr_smtp`` connection (in the demo: the SMTP sink of :mod:`include.demo.smtp_sink`). It
works inside tasks, deadline callbacks and plain Python alike: the hook resolves the
connection through the Task SDK, which reads ``AIRFLOW_CONN_DSR_SMTP`` first.

Recipients are personal data: they are never logged, never put in an exception message,
and never returned; only the message's ``ref`` (the left part of its ``Message-ID``
``<ref@dsr.fabconnect.example>``) identifies a sent mail, e.g. in the ledger.
"""

from __future__ import annotations

import logging
import smtplib
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from include.dsr.errors import TerminalError, TransientError

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
    """Anything that can deliver a :class:`Mail` (raises :class:`TransientError` to retry)."""

    def send(self, mail: Mail) -> None: ...


class SmtpHookTransport:
    """Send through ``airflow.providers.smtp.hooks.smtp.SmtpHook``.

    :param conn_id: the SMTP connection (its extra may set ``from_email``, ``disable_ssl``,
        ``disable_tls``, ``timeout``, ``retry_limit``).
    """

    # Override to use another connection by default.
    default_conn_id = CONN_SMTP

    def __init__(self, conn_id: str | None = None) -> None:
        self.conn_id = conn_id or self.default_conn_id

    def send(self, mail: Mail) -> None:
        """Deliver ``mail``; the connection's ``from_email`` wins over ``mail.sender``.

        :raises TerminalError: no such connection, or the server refused the recipient.
        :raises TransientError: the server could not be reached or failed.
        """
        from airflow.providers.smtp.hooks.smtp import SmtpHook
        from airflow.sdk.exceptions import AirflowException

        headers = {"Message-ID": mail.message_id, "Auto-Submitted": "auto-generated"}
        try:
            with SmtpHook(smtp_conn_id=self.conn_id) as hook:
                hook.send_email_smtp(to=[mail.to], subject=mail.subject, html_content=mail.html,
                                     from_email=hook.from_email or mail.sender, custom_headers=headers)
        except smtplib.SMTPRecipientsRefused:
            # The exception carries the address: do not chain it into logs.
            raise TerminalError(f"mail {mail.ref}: the SMTP server refused the recipient") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientError(f"mail {mail.ref}: SMTP via {self.conn_id!r} failed "
                                 f"({type(exc).__name__}); will retry") from exc
        except AirflowException as exc:
            raise TerminalError(f"mail {mail.ref}: SMTP connection {self.conn_id!r} is missing or "
                                f"unusable ({exc}); define it (AIRFLOW_CONN_{self.conn_id.upper()})") from exc
        log.info("mail %s sent through %s", mail.ref, self.conn_id)
