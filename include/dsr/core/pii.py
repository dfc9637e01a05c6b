"""Keep personal data out of logs (``Pii`` renders as MASKED) and keyed hashes of identities.

:func:`redact` cleans text that comes from outside (a partner's error body, a drop-box
``error`` field) before it reaches the append-only ledger. When two identities are the same
is :mod:`include.dsr.core.identities`'s business.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable


class Pii(str):
    """A string that never shows its value through ``str``/``repr``/``format``."""

    def __str__(self) -> str:
        return "MASKED"

    def __repr__(self) -> str:
        return "Pii(MASKED)"

    def __format__(self, spec: str) -> str:
        return "MASKED"

    @property
    def value(self) -> str:
        """The real value, for code that must use it (queries), never for logging."""
        return str.__str__(self)


def keyed_hash(value: str, secret: str) -> str:
    """HMAC-SHA256 of a value: the erasure 'hash' strategy and the suppression list use it."""
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


REDACTED = "[redacted]"
# An address, and a run of nine or more digits with single separators (a phone number, not a
# request id's date, which follows a hyphen or a letter).
_EMAIL_LIKE = re.compile(r"[^\s@<>\"'(),;:\[\]]+@[^\s@<>\"'(),;:\[\]]+\.[^\s@<>\"'(),;:\[\]]+")
_PHONE_LIKE = re.compile(r"(?<![\w-])\+?\d(?:[ ().\-/]?\d){8,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
#: Longest text from outside that is kept (the rest is cut, with an ellipsis).
TEXT_LIMIT = 200


def redact(text: object, identities: Iterable[str] = (), limit: int = TEXT_LIMIT) -> str:
    """``text`` without the given identities, anything email- or phone-like, control characters,
    and cut to ``limit`` characters: safe for logs and the ledger.

    :param identities: values to remove wherever they appear, whatever their case
        (a subject's emails and phone numbers, in every form known).
    """
    cleaned = str(text)
    for value in sorted({v for v in identities if v}, key=len, reverse=True):
        cleaned = re.sub(re.escape(value), REDACTED, cleaned, flags=re.IGNORECASE)
    cleaned = _EMAIL_LIKE.sub(REDACTED, cleaned)
    cleaned = _PHONE_LIKE.sub(REDACTED, cleaned)
    cleaned = " ".join(_CONTROL.sub(" ", cleaned).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
