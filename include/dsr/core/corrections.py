"""The corrected values of a rectification request (Art. 16), validated before anything changes.

A correction names a field as ``collection.field`` of the platform DB, the new value, and, for a
collection where a subject may have several rows (addresses), the ``row_id`` it corrects. Only
fields the data map marks ``rectify: <format>`` are accepted; each value is checked by its format:

* ``email``: one address (NFC, lower-cased as every lookup compares it);
* ``phone``: a number ``phonenumbers`` reads (international format, or national with the
  request's ``phone_region``), stored as E.164;
* ``name``: letters of any script, spaces, hyphens, apostrophes and dots, 1-100 characters;
* ``text``: 1-200 printable characters; ``country``: an ISO 3166 alpha-2 code;
* ``postal_code``: the country's format where known (the row's corrected or stored country),
  otherwise 2-10 letters, digits, spaces and hyphens.

Messages name the field and what is wrong, never the value.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.dsr.core.identities import WHITESPACE, normalize_email, normalize_phone

if TYPE_CHECKING:
    from include.dsr.core.data_map import DataMap, FieldSpec

PLATFORM = "fabconnect_app"
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_CORRECTIONS = 20
#: Postal code formats of the countries Fabconnect ships to most (others: the generic rule).
POSTAL_CODES = {
    "AT": r"\d{4}",
    "BE": r"\d{4}",
    "CH": r"\d{4}",
    "CZ": r"\d{3} ?\d{2}",
    "DE": r"\d{5}",
    "DK": r"\d{4}",
    "ES": r"\d{5}",
    "FR": r"\d{5}",
    "GB": r"[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}",
    "IE": r"[A-Z]\d[\dW] ?[A-Z\d]{4}",
    "IT": r"\d{5}",
    "LU": r"\d{4}",
    "NL": r"\d{4} ?[A-Z]{2}",
    "PL": r"\d{2}-\d{3}",
    "SE": r"\d{3} ?\d{2}",
    "US": r"\d{5}(-\d{4})?",
}
GENERIC_POSTAL_CODE = r"[A-Z0-9][A-Z0-9 -]{0,8}[A-Z0-9]"


@dataclass(frozen=True)
class Correction:
    """One corrected field; ``value`` is normalised (personal data: never log it)."""

    collection: str
    field: str
    value: str
    row_id: int | None = None

    @property
    def name(self) -> str:
        return f"{self.collection}.{self.field}"

    def to_json(self) -> dict[str, Any]:
        return {"field": self.name, "value": self.value, "row_id": self.row_id}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Correction:
        collection, _, field = raw["field"].partition(".")
        return cls(collection, field, raw["value"], raw.get("row_id"))


def rectifiable_fields(data_map: DataMap) -> dict[str, FieldSpec]:
    """``collection.field`` -> field spec, for every field the subject may correct."""
    system = data_map.system(PLATFORM)
    return {f"{c.name}.{f.name}": f for c in system.collections for f in c.fields if f.rectify}


def _clean_text(value: str) -> str:
    return unicodedata.normalize("NFC", value.strip(WHITESPACE))


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def normalize_value(fmt: str, raw: Any, region: str | None = None) -> tuple[str | None, str | None]:
    """``(normalised value, None)`` or ``(None, what is wrong)`` for one value of ``fmt``."""
    if not isinstance(raw, str) or not raw.strip(WHITESPACE):
        return None, "must be a non-empty string"
    text = _clean_text(raw)
    if fmt in ("name", "text"):
        text = " ".join(text.split())  # tabs, newlines, other spaces: one space
    if _has_control(text):
        return None, "contains control or invisible characters"
    if fmt == "email":
        email = normalize_email(text)
        if email is None or len(email) > 254 or not EMAIL_PATTERN.match(email):
            return None, "is not an email address"
        return email, None
    if fmt == "phone":
        phone = normalize_phone(text, region)
        if phone is None or not _is_valid_phone(phone):
            return None, "is not a phone number that can be read; give it in international format, e.g. +49 30 1234567"
        return phone, None
    if fmt == "name":
        if (
            len(text) > 100
            or not all(unicodedata.category(ch)[0] in ("L", "M") or ch in " -'’." for ch in text)
            or not any(unicodedata.category(ch)[0] == "L" for ch in text)
        ):
            return None, "must be 1-100 letters (any script), spaces, hyphens, apostrophes or dots"
        return text, None
    if fmt == "text":
        if len(text) > 200:
            return None, "is longer than 200 characters"
        return text, None
    if fmt == "country":
        code = text.upper()
        if not re.fullmatch(r"[A-Z]{2}", code) or code not in _regions():
            return None, "must be an ISO 3166 two-letter country code such as DE"
        return code, None
    if fmt == "postal_code":
        code = " ".join(text.upper().split())
        if not re.fullmatch(GENERIC_POSTAL_CODE, code):
            return None, "is not a postal code (2-10 letters, digits, spaces or hyphens)"
        return code, None
    raise ValueError(f"unknown rectify format {fmt!r}")


def _is_valid_phone(e164: str) -> bool:
    """A corrected number must be a number that exists in its country's plan, not merely parse."""
    import phonenumbers

    return phonenumbers.is_valid_number(phonenumbers.parse(e164, None))


def postal_code_problem(code: str, country: str | None) -> str | None:
    """Why ``code`` is not a postal code of ``country``, or None."""
    if not country:
        return None
    pattern = POSTAL_CODES.get(country.upper())
    if pattern and not re.fullmatch(pattern, code):
        return f"is not a postal code of {country.upper()}"
    return None


def _regions() -> frozenset[str]:
    import phonenumbers

    return frozenset(phonenumbers.SUPPORTED_REGIONS)


def parse_corrections(
    raw: Any, data_map: DataMap, phone_region: str | None = None
) -> tuple[list[Correction], list[str]]:
    """The request's corrections, and every problem found (each naming the field)."""
    if not isinstance(raw, list) or not raw:
        return [], ["corrections: give a list of {field, value} objects (row_id for a field of a row among several)"]
    if len(raw) > MAX_CORRECTIONS:
        return [], [f"corrections: at most {MAX_CORRECTIONS} fields per request"]
    allowed = rectifiable_fields(data_map)
    problems: list[str] = []
    found: list[Correction] = []
    for i, item in enumerate(raw):
        where = f"corrections[{i}]"
        if not isinstance(item, dict) or set(item) - {"field", "value", "row_id"}:
            problems.append(f"{where}: must be an object with field, value and optionally row_id")
            continue
        name = item.get("field")
        if name not in allowed:
            problems.append(
                f"{where}.field: {name!r} cannot be rectified; rectifiable: {', '.join(sorted(allowed))}"
                if isinstance(name, str) and len(name) < 80
                else f"{where}.field: name a rectifiable field, one of {', '.join(sorted(allowed))}"
            )
            continue
        row_id = item.get("row_id")
        if row_id is not None and (isinstance(row_id, bool) or not isinstance(row_id, int) or row_id <= 0):
            problems.append(f"{where}.row_id: must be a positive integer (the row's id in your data)")
            continue
        spec = allowed[name]
        assert spec.rectify is not None
        value, problem = normalize_value(spec.rectify, item.get("value"), phone_region)
        if problem:
            problems.append(f"{where} ({name}): the value {problem}")
            continue
        assert value is not None
        collection, _, field = name.partition(".")
        found.append(Correction(collection, field, value, row_id))
    names = [(c.name, c.row_id) for c in found]
    if len(names) != len(set(names)):
        problems.append("corrections: a field is corrected twice; give each field (and row) once")
    for c in found:  # a postal code checked against the country corrected with it, where there is one
        if data_map.system(PLATFORM).collection(c.collection).field(c.field).rectify == "postal_code":
            country = next(
                (
                    o.value
                    for o in found
                    if o.collection == c.collection and o.row_id == c.row_id and o.field == "country"
                ),
                None,
            )
            problem = postal_code_problem(c.value, country)
            if problem:
                problems.append(f"corrections ({c.name}): the value {problem}")
    return found, problems
