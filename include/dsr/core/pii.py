"""Keep personal data out of logs: wrap it in ``Pii`` and it renders as MASKED."""

from __future__ import annotations

import hashlib
import hmac


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


def normalize_email(email: str | None) -> str | None:
    """Case-insensitive, trimmed form used for every email match (DESIGN.md exactness)."""
    if email is None:
        return None
    email = email.strip().lower()
    return email or None


def normalize_phone(phone: str | None) -> str | None:
    """E.164-ish form: keep a leading '+' and digits only."""
    if phone is None:
        return None
    phone = phone.strip()
    digits = "".join(ch for ch in phone if ch.isdigit())
    if not digits:
        return None
    return "+" + digits


def keyed_hash(value: str, secret: str) -> str:
    """HMAC-SHA256 of a value: the erasure 'hash' strategy and the suppression list use it."""
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()
