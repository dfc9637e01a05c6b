"""Pseudonymous fingerprint of a data subject's identities.

The ledger never stores raw emails or phone numbers: it stores this HMAC so that a
``request_id`` reused for another subject can be detected without keeping the identity.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

from include.dsr.core.errors import TerminalError
from include.dsr.core.identities import normalize_email, normalize_phone

IDENTITY_KEYS = ("email", "phone", "account_id")


def _normalise_account_id(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _normalise_phone(value: object) -> str | None:
    """E.164; a value that is no possible number keeps its digits (two such values still differ)."""
    if value is None:
        return None
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return normalize_phone(str(value)) or (f"+{digits}" if digits else None)


_NORMALISERS = {
    "email": lambda value: normalize_email(str(value)) if value is not None else None,
    "phone": _normalise_phone,
    "account_id": _normalise_account_id,
}


def normalise_identities(identities: Mapping[str, object]) -> dict[str, str]:
    """Normalise the identity keys the fingerprint covers, dropping empty ones.

    Email and phone as :mod:`include.dsr.core.identities` compares them (a phone in E.164,
    read in the controller's country), ``account_id`` becomes a trimmed string.

    :param identities: mapping with at least one of ``email``, ``phone``, ``account_id``.
    :returns: the normalised, non-empty identities.
    :raises TerminalError: on an unknown key or when no identity is left.
    """
    unknown = sorted(set(identities) - set(IDENTITY_KEYS))
    if unknown:
        raise TerminalError(f"unknown identity key(s) {unknown}: a fingerprint covers only {list(IDENTITY_KEYS)}")
    normalised = {key: _NORMALISERS[key](value) for key, value in identities.items()}
    kept = {key: value for key, value in normalised.items() if value}
    if not kept:
        raise TerminalError("no usable identity to fingerprint: give at least one of email, phone, account_id")
    return kept


def subject_fingerprint(identities: Mapping[str, object], secret: str) -> str:
    """HMAC-SHA256 (hex) of the subject's normalised identities.

    The identities are normalised (see :func:`normalise_identities`), serialised as
    canonical JSON (sorted keys, no whitespace) and keyed with ``secret``, so the
    same subject written with other case or spacing gets the same fingerprint.

    :param identities: mapping with at least one of ``email``, ``phone``, ``account_id``.
    :param secret: HMAC key; keep it out of the ledger database.
    :returns: 64 lowercase hex characters.
    :raises TerminalError: on an empty secret, an unknown key or no usable identity.
    """
    if not secret:
        raise TerminalError("the fingerprint secret is empty: configure one")
    canonical = json.dumps(normalise_identities(identities), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
