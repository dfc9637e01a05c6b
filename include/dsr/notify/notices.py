"""Notices to the data subject and alerts to ops, rendered from Jinja templates and mailed.

Subject notices (``notify/templates/<kind>.html.j2``): ``acknowledgement``, ``extension``
(reasons, new due date), ``completion`` (package link and its expiry), ``refusal``
(reasons, the right to complain and to a judicial remedy: the data map's
``controller.supervisory_authority`` text). Ops alerts (``ops_alert.html.j2``):
``at_risk``, ``breached``, ``deadline_missed``, to the address in the Airflow Variable
``dsr_ops_email``.

Each notice is sent at most once: the ledger gets a ``notice.sent`` (subject) or
``ops.alert_sent`` (ops) event with a dedupe key, and a notice whose event exists is not
sent again. The event holds the kind, time and ``message_id`` (the left part of the
``Message-ID`` header, ``<message_id@dsr.fabconnect.example>``), never the address: the
subject's address comes from the run conf at send time (:func:`recipient_from_conf`).
Sending happens before recording, so a crash in between can repeat a mail once
(at least once, never silently lost).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.dsr.core.calendar import CONTROLLER_TZ
from include.dsr.core.errors import TerminalError
from include.dsr.core.request import subject_of
from include.dsr.ledger.schema import UnknownRequestError
from include.dsr.notify.mail import (
    Mail,
    MailTransport,
    SmtpHookTransport,
    check_address,
)

if TYPE_CHECKING:
    from jinja2 import Environment

    from include.dsr.core.data_map import Controller
    from include.dsr.ledger.api import EventRow, Ledger, RequestRow

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent / "templates"
SUBJECT_KINDS = ("acknowledgement", "extension", "completion", "refusal", "erasure")
OPS_KINDS = ("at_risk", "breached", "deadline_missed")
NOTICE_EVENT = "notice.sent"
OPS_EVENT = "ops.alert_sent"
VAR_OPS_EMAIL = "dsr_ops_email"
DEFAULT_OPS_EMAIL = "privacy-ops@fabconnect.example.com"

RIGHT_LABELS = {
    "access": "access to your personal data (Art. 15 GDPR)",
    "portability": "a copy of your data in a portable format (Art. 20 GDPR)",
    "erasure": "erasure of your personal data (Art. 17 GDPR)",
    "restriction": "restriction of processing (Art. 18 GDPR)",
    "rectification": "rectification of your personal data (Art. 16 GDPR)",
    "objection": "objection to processing (Art. 21 GDPR)",
}
OPS_LABELS = {"at_risk": "at risk", "breached": "breached", "deadline_missed": "deadline missed"}
OPS_ADVICE = {
    "at_risk": "Answer, chase the partners listed, or extend (with reasons, notified before the first deadline).",
    "breached": "The deadline has passed: answer now and record why it was late.",
    "deadline_missed": "The request's DAG run had not finished when its deadline passed: check the run.",
}


def format_day(moment: datetime) -> str:
    """``Tuesday, 7 April 2026`` in the controller's time zone."""
    local = moment.astimezone(CONTROLLER_TZ)
    return f"{local:%A}, {local.day} {local:%B %Y}"


def ops_email() -> str:
    """The ops address: Airflow Variable ``dsr_ops_email``, default privacy-ops@fabconnect.example.com."""
    from include.dsr.connections import variable

    return check_address(variable(VAR_OPS_EMAIL, DEFAULT_OPS_EMAIL), VAR_OPS_EMAIL)


def recipient_from_conf(conf: Mapping[str, Any], request_id: str, required: bool = True) -> str | None:
    """The subject's email from a run conf; use it to send, never to store or log.

    :param required: when False, a conf without an email gives None (phone-only subjects:
        the notice goes by another channel and ops record it).
    :raises TerminalError: the email is malformed, or missing while ``required``.
    """
    email = subject_of(conf).get("email")
    if not email:
        if not required:
            log.info("request %s has no email: notices go by another channel", request_id)
            return None
        raise TerminalError(
            f"request {request_id!r} has no email in its conf: send the notice by another channel and record it"
        )
    return check_address(email, f"the email of request {request_id!r}")


def answer_address(conf: Mapping[str, Any], request_id: str, verified_emails: set[str]) -> str | None:
    """Where the answer (a package link, what was erased) may go: the conf's email only when the
    resolved, verified subject holds it, else the subject's one verified address, else nobody
    (ops deliver by another channel). An address typed into a request proves nothing by itself.
    """
    from include.dsr.core.identities import normalize_email

    given = recipient_from_conf(conf, request_id, required=False)
    if given and normalize_email(given) in verified_emails:
        return given
    if len(verified_emails) == 1:
        (only,) = verified_emails
        return check_address(only, f"the verified email of request {request_id!r}")
    log.info("request %s: no verified email to answer to; the answer goes by another channel", request_id)
    return None


@lru_cache(maxsize=1)
def _environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, values: Mapping[str, Any]) -> tuple[str, str]:
    """``(subject, html)`` of ``<template>.html.j2`` rendered with ``values``."""
    tmpl = _environment().get_template(f"{template}.html.j2")
    subject = "".join(tmpl.blocks["subject"](tmpl.new_context(dict(values)))).strip()
    return " ".join(subject.split()), tmpl.render(values)


class Notices:
    """Send notices for requests in ``ledger`` and record them there.

    :param transport: delivers mail; default :class:`SmtpHookTransport` (``dsr_smtp``).
    :param controller: the data map's controller block; default loaded from the data map.
    :param clock: returns the current aware time (tests).
    """

    def __init__(
        self,
        ledger: Ledger,
        transport: MailTransport | None = None,
        controller: Controller | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.ledger = ledger
        self.transport = transport or SmtpHookTransport()
        self._controller = controller
        self._clock = clock or (lambda: datetime.now(UTC))
        self._pending: list | None = None
        # mails of a recorded_together block, sent at its end, each with its event's payload
        self._outbox: list[tuple[str, Mail, dict]] = []
        self._pending_keys: set[str] = set()
        # notices already sent, read up front for the requests of a recorded_together block
        self._sent: dict[str, EventRow] = {}
        self._sent_known: set[str] = set()

    @contextmanager
    def recorded_together(self, request_ids: Sequence[str] = ()) -> Iterator[None]:
        """Notices of the block are sent and recorded in the ledger at its end (a wave's chunk): the
        mails together, over several connections when the transport has ``send_all``, then their
        events in one insert. A failed mail or a crash in the block records none of the chunk's
        notices, so the next run sends them again, never skips one.

        :param request_ids: the requests the block notifies: their notices already sent are read
            in one query, and their ledger rows too (kept by the ledger's batch the block runs in),
            instead of two queries a notice
        """
        if self._pending is not None:
            yield
            return
        self._pending, self._outbox, self._pending_keys = [], [], set()
        if request_ids:
            self.ledger.get_requests(list(request_ids))
            sent = self.ledger.events_of(list(request_ids), [NOTICE_EVENT])
            self._sent = {e.dedupe_key: e for events in sent.values() for e in events if e.dedupe_key}
            self._sent_known = set(request_ids)
        try:
            yield
            self._send_outbox()
            self.ledger.append_events(self._pending)
        finally:
            self._pending, self._outbox, self._pending_keys = None, [], set()
            self._sent, self._sent_known = {}, set()

    def _send_outbox(self) -> None:
        """Send the block's mails held back by :meth:`_send_once`; each event's ``sent_at`` is when
        its chunk was delivered."""
        if not self._outbox:
            return
        send_all = getattr(self.transport, "send_all", None)
        if send_all is not None:
            send_all([mail for _, mail, _ in self._outbox])
        else:
            for _, mail, _ in self._outbox:
                self.transport.send(mail)
        sent_at = self._clock()
        for request_id, mail, payload in self._outbox:
            payload["sent_at"] = sent_at
            log.info("request %s: %s sent (message %s)", request_id, payload["kind"], mail.ref)

    def sending(self):
        """A block whose notices share the transport's mail connections, when it keeps them open."""
        session = getattr(self.transport, "session", None)
        return session() if session is not None else nullcontext()

    @property
    def controller(self) -> Controller:
        """The controller named in every notice (sender, complaint rights)."""
        if self._controller is None:
            from include.dsr.core.data_map import load_data_map

            self._controller = load_data_map().controller
        return self._controller

    # -- to the data subject ---------------------------------------------------------

    def acknowledgement(self, request_id: str, recipient: str) -> EventRow | None:
        """Tell the subject the request arrived and when it will be answered."""
        return self._to_subject(request_id, "acknowledgement", recipient, {})

    def extension(self, request_id: str, recipient: str, new_due: datetime, reason: str) -> EventRow | None:
        """Tell the subject the deadline is extended, why, and the new due date."""
        if not reason or not reason.strip():
            raise TerminalError(f"request {request_id!r}: an extension notice needs the reasons")
        return self._to_subject(
            request_id,
            "extension",
            recipient,
            {"reason": reason.strip(), "new_due": format_day(new_due)},
            {"new_due_at": new_due, "reason": reason.strip()},
        )

    def completion(
        self,
        request_id: str,
        recipient: str,
        package_url: str | None = None,
        expires_at: datetime | None = None,
        outcome: str = "data_provided",
        exceptions: Sequence[str] = (),
    ) -> EventRow | None:
        """Tell the subject the request is done: with the package link when there is one, that no
        personal data was found (a valid answer), or which recipients did not confirm.

        :param outcome: the ledger's outcome (``data_provided``, ``no_personal_data_found``,
            ``completed_with_exceptions``)
        :param exceptions: names of the recipients that refused or did not answer
        """
        values = {
            "package_url": package_url,
            "expires": format_day(expires_at) if expires_at else None,
            "no_data": outcome == "no_personal_data_found",
            "exceptions": list(exceptions),
        }
        facts = {
            "with_package": bool(package_url),
            "link_expires_at": expires_at,
            "outcome": outcome,
            "exceptions": list(exceptions),
        }
        return self._to_subject(request_id, "completion", recipient, values, facts)

    def erasure(
        self,
        request_id: str,
        recipient: str,
        summary: Mapping[str, Any],
        held: Sequence[Mapping[str, Any]] = (),
        exceptions: Sequence[str] = (),
        recipients: Sequence[str] = (),
    ) -> EventRow | None:
        """Tell the subject the data is erased: what, which recipients were told, and what was kept,
        on which basis and until when (the partial refusal of Art. 12(4), with the complaint right).

        :param summary: the erasure plan's summary of the request (counts only)
        :param held: holds grouped per collection (collection, basis, retain_until, rows)
        """
        kept = [
            {
                "what": h.get("description") or h["collection"],
                "basis": h["basis"],
                "until": format_day(datetime.fromisoformat(h["retain_until"])),
                "rows": h["rows"],
            }
            for h in held
        ]
        values = {
            "rows_deleted": summary.get("rows_deleted", 0),
            "rows_anonymised": summary.get("rows_anonymised", 0),
            "objects": sum((summary.get("objects") or {}).values()),
            "kept": kept,
            "exceptions": list(exceptions),
            "recipients": list(recipients),
        }
        facts = {
            "held_collections": [h["collection"] for h in held],
            "exceptions": list(exceptions),
            "recipients_told": len(recipients),
        }
        return self._to_subject(request_id, "erasure", recipient, values, facts)

    def restriction(
        self, request_id: str, recipient: str, recipients: Sequence[str] = (), exceptions: Sequence[str] = ()
    ) -> EventRow | None:
        """Tell the subject the processing is restricted (only storage continues) and who was told."""
        values = {"recipients": list(recipients), "exceptions": list(exceptions)}
        facts = {"recipients_told": len(recipients), "exceptions": list(exceptions)}
        return self._to_subject(request_id, "restriction", recipient, values, facts)

    def restriction_lift(self, request_id: str, recipient: str, since: datetime | None) -> EventRow | None:
        """Tell the subject, before it happens, that the restriction will be lifted (Art. 18(3))."""
        values = {"since": format_day(since) if since else None}
        return self._to_subject(request_id, "restriction_lift", recipient, values, {})

    def rectification(
        self,
        request_id: str,
        recipient: str,
        fields: Sequence[str],
        recipients: Sequence[str] = (),
        exceptions: Sequence[str] = (),
    ) -> EventRow | None:
        """Tell the subject which fields were corrected (names, never values) and who was told."""
        values = {"fields": list(fields), "recipients": list(recipients), "exceptions": list(exceptions)}
        facts = {"fields": list(fields), "recipients_told": len(recipients), "exceptions": list(exceptions)}
        return self._to_subject(request_id, "rectification", recipient, values, facts)

    def objection(
        self,
        request_id: str,
        recipient: str,
        stopped: Sequence[str],
        refused: Mapping[str, str],
        recipients: Sequence[str] = (),
    ) -> EventRow | None:
        """Tell the subject which processing stopped and, for each objection ops did not uphold,
        the compelling grounds, with the right to complain (Art. 12(4), 21(1)).

        :param stopped: descriptions of the purposes no longer processed for the subject
        :param refused: description of a purpose -> ops' reasons for carrying on
        """
        values = {"stopped": list(stopped), "refused": dict(refused), "recipients": list(recipients)}
        facts = {"stopped": len(stopped), "refused": len(refused), "recipients_told": len(recipients)}
        return self._to_subject(request_id, "objection", recipient, values, facts)

    def refusal(
        self, request_id: str, recipient: str, reasons: Sequence[str], partial: bool = False
    ) -> EventRow | None:
        """Tell the subject what is refused and why, and their right to complain (Art. 12(4))."""
        reasons = [r.strip() for r in reasons if r and r.strip()]
        if not reasons:
            raise TerminalError(f"request {request_id!r}: a refusal must state its reasons (Art. 12(4) GDPR)")
        return self._to_subject(
            request_id,
            "refusal",
            recipient,
            {"reasons": reasons, "partial": partial},
            {"reasons": reasons, "partial": partial},
        )

    # -- to ops ----------------------------------------------------------------------

    def ops_alert(
        self,
        request_id: str,
        kind: str,
        deadline: datetime,
        days_left: int,
        owed_partners: Sequence[str] = (),
        ops_address: str | None = None,
        run: tuple[str, str] | None = None,
    ) -> EventRow | None:
        """Alert ops once per request, kind and deadline in force.

        :param run: ``(dag_id, run_id)`` of the DAG run concerned, if any.
        """
        if kind not in OPS_KINDS:
            raise TerminalError(f"unknown ops alert {kind!r}: expected one of {list(OPS_KINDS)}")
        dedupe = f"{request_id}:{OPS_EVENT}:{kind}:{deadline.astimezone(CONTROLLER_TZ).date().isoformat()}"
        values = {
            "kind_label": OPS_LABELS[kind],
            "advice": OPS_ADVICE[kind],
            "deadline": format_day(deadline),
            "days_left": days_left,
            "owed_partners": list(owed_partners),
            "dag_id": run[0] if run else None,
            "run_id": run[1] if run else None,
        }
        facts = {"deadline": deadline, "days_left": days_left, "owed_partners": list(owed_partners)}
        address = ops_address or ops_email()
        return self._send_once(request_id, "ops_alert", address, values, OPS_EVENT, dedupe, {"kind": kind, **facts})

    # -- shared ----------------------------------------------------------------------

    def _to_subject(
        self, request_id: str, kind: str, recipient: str, values: dict, facts: dict | None = None
    ) -> EventRow | None:
        recipient = check_address(recipient, f"the recipient of request {request_id!r}")
        dedupe = f"{request_id}:{NOTICE_EVENT}:{kind}"
        return self._send_once(
            request_id, kind, recipient, values, NOTICE_EVENT, dedupe, {"kind": kind, **(facts or {})}
        )

    def _send_once(
        self,
        request_id: str,
        template: str,
        recipient: str,
        values: dict,
        event_type: str,
        dedupe_key: str,
        facts: dict,
    ) -> EventRow | None:
        row = self.ledger.get_request(request_id)
        if row is None:
            raise UnknownRequestError(f"request {request_id!r} is not in the ledger; record it before notifying")
        if event_type == NOTICE_EVENT and request_id in self._sent_known:
            existing = self._sent.get(dedupe_key)
        else:
            existing = self.ledger.event_with_key(dedupe_key)
        if existing is not None:
            log.info("request %s: %s already sent (event seq %s)", request_id, dedupe_key, existing.seq)
            return existing
        subject, html = render(template, {**values, "controller": self.controller, "request": self._facts(row)})
        mail = Mail(to=recipient, subject=subject, html=html, sender=self.controller.privacy_contact)
        if self._pending is not None:
            if dedupe_key in self._pending_keys:
                return None  # asked twice in one block: one mail
            self._pending_keys.add(dedupe_key)
            payload = {**facts, "message_id": mail.ref, "template": template}
            self._outbox.append((request_id, mail, payload))
            self._pending.append((request_id, event_type, payload, dedupe_key))
            return None
        self.transport.send(mail)
        payload = {**facts, "message_id": mail.ref, "sent_at": self._clock(), "template": template}
        event = self.ledger.append_event(request_id, event_type, payload, dedupe_key=dedupe_key)
        log.info("request %s: %s sent (message %s)", request_id, facts["kind"], mail.ref)
        return event

    @staticmethod
    def _facts(row: RequestRow) -> dict[str, Any]:
        return {
            "request_id": row.request_id,
            "right": row.right,
            "jurisdiction": row.jurisdiction,
            "status": row.status,
            "right_label": RIGHT_LABELS.get(row.right, row.right),
            "received": format_day(row.received_at),
            "due": format_day(row.effective_due_at),
        }
