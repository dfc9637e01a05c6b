"""When two emails, or two phone numbers, are the same identity: the one definition.

**Emails** are compared after trimming every Unicode whitespace character (and the
invisible zero-width ones copy-paste leaves behind) from both ends, Unicode NFC
normalisation and lower-casing: ``normalize_email``. Databases cannot be trusted to agree:
SQLite's ``lower()`` folds ASCII only, PostgreSQL's follows the column's collation (a ``C``
database folds ASCII only too) and ``trim()`` removes spaces only. So lookups never ask the
database to normalise. They ask for an indexed key, ``lower(trim(column, <WHITESPACE>))``, to
be one of :func:`email_key_candidates`: every form that key can take for a stored address
that normalises to the wanted one (ASCII folded by every collation; each non-ASCII letter in
either case; NFC or NFD), and the rows found are checked exactly in Python. The same rows
come back on SQLite and on PostgreSQL under ``C`` and UTF-8 collations.

**Phones** compare as E.164 (``+4915123456789``), parsed with ``phonenumbers``; a number in
national format is read in a region (the controller's country unless a request or the data
map says otherwise). Columns that store free text are looked up by an indexed digits-only key
against the forms a person writes (:func:`phone_digit_candidates`), then parsed in Python.
"""

from __future__ import annotations

import itertools
import unicodedata
from functools import lru_cache

from include.dsr.core.calendar import CONTROLLER_COUNTRY

# Every character str.isspace() accepts, plus zero-width characters that copy and paste leave behind.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\u200b\u2060\ufeff"
)
#: Beyond this many key forms an address is looked up without the index (and checked exactly).
MAX_EMAIL_CANDIDATES = 512
# Characters people put between the digits of a phone number; the digits key drops them.
PHONE_PUNCTUATION = " -()/.+\t\xa0"


def normalize_email(email: str | None) -> str | None:
    """The form every email comparison uses: trimmed of any whitespace, NFC, lower case; None if empty."""
    if email is None:
        return None
    text = unicodedata.normalize("NFC", email).strip(WHITESPACE)
    text = unicodedata.normalize("NFC", text.lower())
    return text or None


@lru_cache(maxsize=1)
def _upper_forms() -> dict[str, frozenset[str]]:
    """lower-case character -> the single characters whose NFC lower-case form it is,
    e.g. ``ä`` <- ``Ä``, ``ß`` <- ``ẞ``, ``ω`` <- ``Ω`` and the Ohm sign."""
    forms: dict[str, set[str]] = {}
    for code in range(0x80, 0x110000):
        char = chr(code)
        if unicodedata.category(char) not in ("Lu", "Lt", "Ll", "So"):  # letters, and signs such as Ω
            continue
        target = unicodedata.normalize("NFC", char).lower()
        if len(target) == 1 and target != char:
            forms.setdefault(target, set()).add(char)
    return {target: frozenset(chars) for target, chars in forms.items()}


def email_key_candidates(email: str) -> set[str] | None:
    """Every value ``lower(trim(column, WHITESPACE))`` can have, on any supported database and
    collation, for a stored address whose :func:`normalize_email` is ``email``.

    :param email: an address already normalised with :func:`normalize_email`.
    :returns: the candidate keys, or None when there would be more than
        :data:`MAX_EMAIL_CANDIDATES` (look such an address up without the index).
    """
    upper = _upper_forms()
    choices: list[list[str]] = []
    for char in email:
        # Every collation folds ASCII itself. Non-ASCII stand-ins for ASCII letters (the Kelvin
        # sign for k) are not searched: they would double the forms per letter for data no one stores.
        options = {char} if char.isascii() else {char} | set(upper.get(char, ()))
        choices.append(sorted(options))
    count = 1
    for choice in choices:
        count *= len(choice)
    if count * 2 > MAX_EMAIL_CANDIDATES:
        return None
    keys: set[str] = set()
    for combination in itertools.product(*choices):
        key = "".join(combination)
        keys.add(key)
        keys.add(unicodedata.normalize("NFD", key))  # stored decomposed: lower() keeps it decomposed
    return keys


# -- phones -------------------------------------------------------------------------------


def parse_phone(raw: str | None, region: str | None = None):
    """The ``phonenumbers.PhoneNumber`` of ``raw`` read in ``region``, or None if it is no possible number."""
    import phonenumbers

    if raw is None:
        return None
    text = raw.strip(WHITESPACE)
    if not text:
        return None
    try:
        number = phonenumbers.parse(text, region or CONTROLLER_COUNTRY)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_possible_number(number) else None


def normalize_phone(raw: str | None, region: str | None = None) -> str | None:
    """E.164 form of a phone number (``+4915123456789``), national formats read in ``region``
    (default: the controller's country); None when it cannot be a phone number."""
    import phonenumbers

    number = parse_phone(raw, region)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) if number else None


def phone_digit_candidates(e164: str, region: str | None = None) -> set[str]:
    """Digits-only forms a person may have written ``e164`` in, in a column read in ``region``:
    ``4915123456789``, ``004915123456789`` (the region's international prefix), ``49015123456789``
    (``+49 (0)151 ...``), and ``015123456789`` / ``15123456789`` (national, with and without the
    trunk prefix) when the number belongs to that region."""
    import phonenumbers

    number = phonenumbers.parse(e164, None)
    international = e164.lstrip("+")
    region = region or CONTROLLER_COUNTRY
    forms = {international}
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    prefix = getattr(metadata, "international_prefix", None) if metadata else None
    if prefix and prefix.isdigit():
        forms.add(prefix + international)
    forms.add("00" + international)
    code = number.country_code or 0
    own = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
        code, phonenumbers.region_code_for_country_code(code)
    )
    if own is not None and own.national_prefix:
        # "+49 (0)151 ...": the trunk prefix kept after the country code, a common way to write it.
        significant = phonenumbers.national_significant_number(number)
        forms |= {
            f"{number.country_code}{own.national_prefix}{significant}",
            f"00{number.country_code}{own.national_prefix}{significant}",
        }
    if metadata is not None and number.country_code == metadata.country_code:
        # Written nationally: the significant number, with and without the trunk prefix (0151..., 151...).
        significant = phonenumbers.national_significant_number(number)
        forms.add(significant)
        if metadata.national_prefix:
            forms.add(metadata.national_prefix + significant)
    return forms
