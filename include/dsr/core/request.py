"""The run conf of a right DAG, validated before anything is touched.

``parse_request(conf, right)`` returns a ``DSRRequest`` or raises
``RequestValidationError`` listing every problem found, each naming the conf key and what
to do. Messages never repeat the identity values themselves. The DAGs declare the same
rules as Airflow ``Param`` definitions (``dag_factory.request_params``) so the trigger
form validates too; this module stays the authority.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from include import settings
from include.dsr.core.corrections import Correction
from include.dsr.core.errors import RequestValidationError
from include.dsr.core.identities import PHONE_TYPING, WHITESPACE, normalize_email, normalize_phone
from include.dsr.core.receivers import receiver_problem

REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PHONE_PATTERN = r"^\+?[0-9 ()./-]{6,24}$"


#: What the trigger form and the api-server check before a run exists (the engine checks more):
#: an email without spaces or control characters, and a phone of digits and the separators
#: people type, each with the blanks the engine strips around it, so the form refuses nothing
#: the engine takes. ``\s`` plus the three invisible blanks it lacks is ``WHITESPACE`` (tested).
_BLANK = r"[\s\u200b\u2060\ufeff]*"
_EMAIL_PART = r"[^@\s\u0000-\u001f\u007f\u200b\u2060\ufeff]+"
EMAIL_FIELD_PATTERN = rf"^{_BLANK}{_EMAIL_PART}@{_EMAIL_PART}\.{_EMAIL_PART}{_BLANK}$"
PHONE_FIELD_PATTERN = rf"^{_BLANK}\+?[0-9\s\u200b\u2060\ufeff()\[\]./\u2010-\u2015\u2212\uff0d-]{{6,40}}{_BLANK}$"
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|z|[+-]\d{2}:?\d{2})$"
JURISDICTIONS = ("GDPR", "CCPA")
VERIFICATION_METHODS = ("logged_in_session", "email_link", "sms_code", "id_document_checked", "ops_confirmed")
VERIFICATION_LABELS = {
    "logged_in_session": "Signed in to their account",
    "email_link": "Clicked a link mailed to the email",
    "sms_code": "Entered a code texted to the phone",
    "id_document_checked": "Ops checked an ID document",
    "ops_confirmed": "Ops confirmed it another way",
}
#: Which identity types each verification method proves are the subject's. Only these link
#: accounts (include.dsr.identity.resolver); the request's other identities are checked for
#: conflicts and otherwise ignored. A session proves its account and the account's login email;
#: a link mailed to an address proves that address; a code texted to a number proves that number;
#: ops who inspected an ID, or confirmed the identity in the run, vouch for every identity given.
VERIFICATION_COVERS: dict[str, frozenset[str]] = {
    "logged_in_session": frozenset({"account_id", "email"}),
    "email_link": frozenset({"email"}),
    "sms_code": frozenset({"phone"}),
    "id_document_checked": frozenset({"account_id", "email", "phone"}),
    "ops_confirmed": frozenset({"account_id", "email", "phone"}),
}
#: Types a method proves only as the verified account's own: a logged-in session knows its
#: account's login email, not whatever email the form was given alongside the account id.
VERIFICATION_BOUND_TO_ACCOUNT: dict[str, frozenset[str]] = {"logged_in_session": frozenset({"email"})}
EMAIL_MAX, PHONE_MAX = 254, 32
ACCOUNT_ID_MAX = 2**63 - 1
RESTRICTION_ACTIONS = ("apply", "lift")
CLOCK_SKEW = timedelta(minutes=5)  # received_at a little ahead of our clock is not "the future"

#: The trigger form's separate fields (one per identity, and for the verification): the same
#: values as ``subject`` and ``verification`` of the DESIGN's conf, which REST and the CLI send.
#: A conf may use either; giving one value two different ways is refused.
FORM_SUBJECT_KEYS = {
    "subject_email": "email",
    "subject_phone": "phone",
    "subject_account_id": "account_id",
    "subject_phone_region": "phone_region",
}
FORM_VERIFICATION_KEYS = {"verification_method": "method", "verified_at": "verified_at"}
COMMON_KEYS = {
    "request_id",
    "subject",
    "received_at",
    "verification",
    "jurisdiction",
    "dry_run",
    *FORM_SUBJECT_KEYS,
    *FORM_VERIFICATION_KEYS,
}
#: A conf is a few hundred bytes; anything far larger is refused whole before a field is read.
CONF_MAX_BYTES = 64 * 1024
EXTRA_KEYS = {
    "portability": {"transmit_to"},
    "restriction": {"action"},
    "rectification": {"corrections"},
    "objection": {"purposes", "grounds"},
}
#: How an objection to a purpose is handled, from the purpose's legal basis in the data map.
DIRECT_MARKETING, CONSENT_WITHDRAWAL, LEGITIMATE_INTEREST = (
    "direct_marketing",
    "consent_withdrawal",
    "legitimate_interest",
)
GROUNDS_MAX = 2000
#: Ops' choices when they weigh an objection to processing on legitimate interests (Art. 21(1)).
UPHOLD_OBJECTION = "No compelling grounds: stop the processing"
OVERRIDE_OBJECTION = "Compelling legitimate grounds override the objection"
OBJECTION_DECISIONS = [UPHOLD_OBJECTION, OVERRIDE_OBJECTION]


class Subject(BaseModel):
    model_config = ConfigDict(frozen=True)
    email: str | None = None
    phone: str | None = None
    account_id: int | None = None
    #: Region a phone without country code is read in (default: the controller's country).
    phone_region: str | None = None

    def identities(self) -> dict[str, Any]:
        """Normalised identities as used by every lookup (email NFC lower-case, phone E.164)."""
        found = {
            "email": normalize_email(self.email),
            "phone": normalize_phone(self.phone, self.phone_region),
            "account_id": self.account_id,
        }
        return {k: v for k, v in found.items() if v is not None}


class Verification(BaseModel):
    model_config = ConfigDict(frozen=True)
    method: str
    verified_at: datetime


class DSRRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
    request_id: str
    right: str
    subject: Subject
    received_at: datetime
    verification: Verification | None = None
    jurisdiction: str = "GDPR"
    dry_run: bool = False
    transmit_to: str | None = None
    action: str | None = None
    #: rectification: the corrected fields (personal data: staged, never logged)
    corrections: tuple[Correction, ...] = ()
    #: objection: the purposes objected to (data-map keys), and the subject's grounds (free text)
    purposes: tuple[str, ...] = ()
    grounds: str | None = None


def _parse_time(value: Any, key: str, problems: list[str]) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            problems.append(f"{key}: not an ISO-8601 timestamp (e.g. 2026-11-25T09:30:00Z)")
            return None
    if moment.tzinfo is None:
        problems.append(f"{key}: add a timezone offset or Z (e.g. 2026-11-25T09:30:00Z)")
        return None
    return moment.astimezone(UTC)


SUBJECT_KEYS = ("email", "phone", "account_id", "phone_region")


def _text(raw: Any, key: str, limit: int, problems: list[str]) -> str | None:
    """``key`` is the field as the conf named it (``subject.email`` or the form's ``subject_email``)."""
    if raw is None or (isinstance(raw, str) and not raw.strip(WHITESPACE)):
        return None
    if not isinstance(raw, str):
        problems.append(f"{key}: must be a string")
        return None
    text = raw.strip(WHITESPACE)
    if len(text) > limit:
        problems.append(f"{key}: longer than {limit} characters")
        return None
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text):
        problems.append(f"{key}: contains control or invisible characters")
        return None
    return text


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip(WHITESPACE))


def _merged(conf: Mapping[str, Any], nested_key: str, flat_keys: dict[str, str], problems: list[str]) -> Any:
    """``conf[nested_key]`` with the form's flat fields folded in; a value given twice differently is a problem."""
    nested = conf.get(nested_key)
    if _blank(nested) or nested == {}:
        nested = {}
    if not isinstance(nested, dict):
        return nested  # the caller reports the wrong type
    merged = dict(nested)
    for flat, key in flat_keys.items():
        value = conf.get(flat)
        if _blank(value):
            continue
        if not _blank(merged.get(key)) and str(merged[key]).strip(WHITESPACE) != str(value).strip(WHITESPACE):
            problems.append(f"{flat}: differs from {nested_key}.{key}; give the value once")
            continue
        merged[key] = value
    return merged


def subject_of(conf: Mapping[str, Any] | None) -> dict:
    """The subject's raw identities from a conf, whether sent as ``subject`` or as the form's fields."""
    merged = _merged(conf or {}, "subject", FORM_SUBJECT_KEYS, [])
    return merged if isinstance(merged, dict) else {}


def _check_subject(raw: Any, problems: list[str], named: dict[str, str] | None = None) -> Subject | None:
    """The subject; ``named`` maps an identity to the field it came in (default ``subject.<key>``)."""

    def field(key: str) -> str:
        return (named or {}).get(key, f"subject.{key}")

    if not isinstance(raw, dict):
        problems.append("subject: must be an object with at least one of email, phone, account_id")
        return None
    unknown = set(raw) - set(SUBJECT_KEYS)
    if unknown:
        problems.append(f"subject: unknown keys {sorted(map(str, unknown))}; allowed: {', '.join(SUBJECT_KEYS)}")
    email = _text(raw.get("email"), field("email"), EMAIL_MAX, problems)
    phone = _text(raw.get("phone"), field("phone"), PHONE_MAX, problems)
    region = raw.get("phone_region")
    if region is not None and (not isinstance(region, str) or region.upper() not in _phone_regions()):
        problems.append(f"{field('phone_region')}: must be a two-letter country code such as DE or FR")
        region = None
    region = region.upper() if isinstance(region, str) else None
    account_id = raw.get("account_id")
    if email is None and phone is None and account_id in (None, ""):
        problems.append("subject: give at least one identity (email, phone or account_id)")
    if email is not None and not re.match(EMAIL_PATTERN, email):
        problems.append(f"{field('email')}: malformed email address")
    typed = phone.translate(PHONE_TYPING) if phone is not None else None  # other dashes and spaces too
    if typed is not None and (not re.match(PHONE_PATTERN, typed) or normalize_phone(phone, region) is None):
        problems.append(
            f"{field('phone')}: not a phone number that can be read; give it in international format, "
            "e.g. +49 30 1234567 (or set subject.phone_region for a national number)"
        )
    if account_id in (None, ""):
        account_id = None
    elif isinstance(account_id, bool) or not isinstance(account_id, int | str):
        problems.append(f"{field('account_id')}: must be an integer account id")
        account_id = None
    else:
        try:
            account_id = int(account_id)
        except ValueError:
            problems.append(f"{field('account_id')}: must be an integer account id")
            account_id = None
        if account_id is not None and not 0 < account_id <= ACCOUNT_ID_MAX:
            problems.append(f"{field('account_id')}: must be a positive integer account id")
            account_id = None
    return Subject(email=email, phone=phone, account_id=account_id, phone_region=region)


def _phone_regions() -> frozenset[str]:
    import phonenumbers

    return frozenset(phonenumbers.SUPPORTED_REGIONS)


def verified_types(request: DSRRequest) -> frozenset[str]:
    """The identity types of the request its verification proves (all of them when ops confirm)."""
    if request.verification is None:
        return VERIFICATION_COVERS["ops_confirmed"]
    return VERIFICATION_COVERS[request.verification.method]


def parse_request(conf: dict, right: str, now: datetime | None = None) -> DSRRequest:
    """Validate a DAG run conf for ``right``; raise ``RequestValidationError`` listing all problems."""
    now = now or datetime.now(UTC)
    problems: list[str] = []
    if not isinstance(conf, dict):
        raise RequestValidationError("request refused before anything was touched: conf: must be a JSON object")
    size = len(json.dumps(conf, default=str))
    if size > CONF_MAX_BYTES:
        raise RequestValidationError(
            f"request refused before anything was touched: conf: {size} bytes, more than {CONF_MAX_BYTES}"
        )
    allowed = COMMON_KEYS | EXTRA_KEYS.get(right, set())
    unknown = set(conf) - allowed
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}; allowed for {right}: {sorted(allowed)}")
    request_id = conf.get("request_id")
    if not isinstance(request_id, str) or not re.match(REQUEST_ID_PATTERN, request_id):
        problems.append("request_id: required, 3-64 characters of letters, digits, '.', '_' or '-'")
    named = {key: flat for flat, key in FORM_SUBJECT_KEYS.items() if not _blank(conf.get(flat))}
    subject = _check_subject(_merged(conf, "subject", FORM_SUBJECT_KEYS, problems), problems, named)
    received_at = now
    if conf.get("received_at") not in (None, ""):
        received_at = _parse_time(conf["received_at"], "received_at", problems) or now
        if received_at > now + CLOCK_SKEW:
            problems.append("received_at: is in the future; give the time the request arrived")
    verification = None
    raw = _merged(conf, "verification", FORM_VERIFICATION_KEYS, problems)
    if not _blank(conf.get("verification_method")) and _blank(conf.get("verified_at")) and isinstance(raw, dict):
        raw.setdefault("verified_at", now.isoformat())  # the form's method alone: verified by the trigger's time
    if raw:
        method = raw.get("method") if isinstance(raw, dict) else None
        if method not in VERIFICATION_METHODS:
            problems.append(f"verification.method: must be one of {list(VERIFICATION_METHODS)}")
        verified_at = _parse_time(
            raw.get("verified_at") if isinstance(raw, dict) else None, "verification.verified_at", problems
        )
        if method in VERIFICATION_METHODS and verified_at:
            verification = Verification(method=method, verified_at=verified_at)
            covered = VERIFICATION_COVERS[method]
            given = set(subject.identities()) if subject else set()
            if given and not given & covered:
                problems.append(
                    f"verification.method: {method} proves {', '.join(sorted(covered))}, and the subject gives "
                    f"only {', '.join(sorted(given))}; give a verified identity, or let ops confirm the identity "
                    "(leave verification out)"
                )
    jurisdiction = conf.get("jurisdiction") or "GDPR"
    if jurisdiction not in JURISDICTIONS:
        problems.append(f"jurisdiction: must be one of {list(JURISDICTIONS)}")
    if not isinstance(conf.get("dry_run", False), bool):
        problems.append("dry_run: must be true or false")
    transmit_to = conf.get("transmit_to") or None
    if transmit_to is not None and (problem := receiver_problem(transmit_to, settings.RECEIVING_CONTROLLERS)):
        problems.append(problem)
    action = conf.get("action")
    if right == "restriction" and action not in RESTRICTION_ACTIONS:
        problems.append(f"action: must be one of {list(RESTRICTION_ACTIONS)}")
    corrections: list[Correction] = []
    if right == "rectification":
        from include.dsr.core.corrections import parse_corrections
        from include.dsr.core.data_map import load_data_map

        corrections, found = parse_corrections(
            conf.get("corrections"), load_data_map(), subject.phone_region if subject else None
        )
        problems += found
    purposes: list[str] = []
    grounds = conf.get("grounds") or None
    if right == "objection":
        purposes = _check_purposes(conf.get("purposes"), problems)
        if grounds is not None and (not isinstance(grounds, str) or len(grounds) > GROUNDS_MAX):
            problems.append(f"grounds: the subject's grounds as text, at most {GROUNDS_MAX} characters")
    if problems:
        rid = request_id if isinstance(request_id, str) and re.match(REQUEST_ID_PATTERN, request_id) else "<invalid>"
        raise RequestValidationError(f"request {rid} refused before anything was touched: " + "; ".join(problems))
    # Both were checked above (a problem is reported otherwise); narrow the types for the model.
    assert isinstance(request_id, str)
    assert subject is not None
    return DSRRequest(
        request_id=request_id,
        right=right,
        subject=subject,
        received_at=received_at,
        verification=verification,
        jurisdiction=jurisdiction,
        dry_run=bool(conf.get("dry_run")),
        transmit_to=transmit_to,
        action=action,
        corrections=tuple(corrections),
        purposes=tuple(purposes),
        grounds=grounds.strip() if isinstance(grounds, str) else None,
    )


def objection_kind(purpose_key: str) -> str:
    """How an objection to the purpose is handled: direct marketing (absolute, Art. 21(2)),
    consent withdrawal (Art. 7(3)), or legitimate interests weighed by ops (Art. 21(1))."""
    from include.dsr.core.data_map import load_data_map

    purpose = load_data_map().purposes[purpose_key]
    if purpose.direct_marketing:
        return DIRECT_MARKETING
    return CONSENT_WITHDRAWAL if purpose.legal_basis == "consent" else LEGITIMATE_INTEREST


def _check_purposes(raw: Any, problems: list[str]) -> list[str]:
    from include.dsr.core.data_map import load_data_map

    known = load_data_map().purposes
    objectable = sorted(
        k for k, p in known.items() if p.direct_marketing or p.legal_basis in ("consent", "legitimate_interest")
    )
    if not isinstance(raw, list) or not raw or not all(isinstance(p, str) for p in raw):
        problems.append(f"purposes: give the purposes objected to, a list of: {', '.join(objectable)}")
        return []
    found = []
    for key in dict.fromkeys(raw):
        if key not in known:
            problems.append(f"purposes: unknown purpose {key[:40]!r}; one of {', '.join(objectable)}")
        elif key not in objectable:
            problems.append(
                f"purposes: {key} rests on {known[key].legal_basis.replace('_', ' ')}; an objection covers "
                "legitimate interests and direct marketing (Art. 21), consent is withdrawn (Art. 7(3)); "
                "ask for erasure or restriction instead"
            )
        else:
            found.append(key)
    return found


# -- waves --------------------------------------------------------------------------------

#: The rights whose DAG takes a wave of requests in one run.
WAVE_RIGHTS = ("access", "portability", "erasure")
WAVE_KEY_PATTERN = r"^_waves/[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.jsonl$"
#: Keys a wave's run conf may carry besides ``wave``: the DAG's params with their defaults (the
#: trigger form sends them all); identities belong in the wave's file, never in the conf.
WAVE_CONF_KEYS = COMMON_KEYS | {"wave", "transmit_to"}  # transmit_to: the portability form sends it, empty


class WaveRequest(BaseModel):
    """A run conf naming a wave: ``request_id`` is the wave's id, ``wave`` its file's key."""

    model_config = ConfigDict(frozen=True)
    wave_id: str
    key: str
    right: str
    dry_run: bool = False


def is_wave(conf: dict | None) -> bool:
    return bool((conf or {}).get("wave"))


def parse_wave(conf: dict, right: str) -> WaveRequest:
    """Validate the run conf of a wave; raise ``RequestValidationError`` listing every problem."""
    problems = []
    unknown = set(conf) - WAVE_CONF_KEYS
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)} for a wave; allowed: {sorted(WAVE_CONF_KEYS)}")
    wave_id = conf.get("request_id")
    if not isinstance(wave_id, str) or not re.match(REQUEST_ID_PATTERN, wave_id):
        problems.append("request_id: the wave's id, 3-64 characters of letters, digits, '.', '_' or '-'")
    key = conf.get("wave")
    if not isinstance(key, str) or not re.match(WAVE_KEY_PATTERN, key):
        problems.append("wave: the key of a JSON Lines file in the exports bucket, e.g. _waves/WAVE-2026-12-01.jsonl")
    subject = _merged(conf, "subject", FORM_SUBJECT_KEYS, problems)
    if not isinstance(subject, dict) or any(v not in (None, "") for v in subject.values()):
        problems.append("subject: a wave's identities are in its file, one request per line; leave subject out")
    for key_name in ("received_at", "verification", "transmit_to", "action", *FORM_VERIFICATION_KEYS):
        if conf.get(key_name) not in (None, ""):
            problems.append(f"{key_name}: give it per request, in the wave's file")
    if not isinstance(conf.get("dry_run", False), bool):
        problems.append("dry_run: must be true or false")
    if problems:
        wid = wave_id if isinstance(wave_id, str) and re.match(REQUEST_ID_PATTERN, wave_id) else "<invalid>"
        raise RequestValidationError(f"wave {wid} refused before anything was touched: " + "; ".join(problems))
    assert isinstance(wave_id, str)
    assert isinstance(key, str)
    return WaveRequest(wave_id=wave_id, key=key, right=right, dry_run=bool(conf.get("dry_run")))
