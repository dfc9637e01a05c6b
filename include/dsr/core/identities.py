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

import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache, wraps
from typing import ParamSpec, TypeVar

from include.dsr.core.calendar import CONTROLLER_COUNTRY

# Every character str.isspace() accepts, plus zero-width characters that copy and paste leave behind.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\u200b\u2060\ufeff"
)
#: Beyond this many key forms an address is looked up without the index (and checked exactly).
MAX_EMAIL_CANDIDATES = 512
# Characters people put between the digits of a phone number; the digits key drops them: the
# spaces of typing and typesetting (no-break, thin, narrow, figure, ideographic, zero-width),
# line breaks, the dashes from hyphen to minus sign, brackets, slashes, dots and plus. One set
# for every backend (SQLite's parser allows about 30 nested replace() calls, so it stays short).
# A stored number with other characters between its digits (fullwidth digits, a "tel:" prefix,
# an extension after the number) is not found by a lookup.
PHONE_SPACES = "\t\n\r \xa0\u2007\u2009\u200a\u202f\u3000\u200b\u2060\ufeff"
PHONE_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2212\uff0d"
PHONE_PUNCTUATION = PHONE_SPACES + PHONE_DASHES + "()[]/.+"


def normalize_email(email: str | None) -> str | None:
    """The form every email comparison uses: trimmed of any whitespace, NFC, lower case; None if empty."""
    if email is None:
        return None
    text = unicodedata.normalize("NFC", email).strip(WHITESPACE)
    text = unicodedata.normalize("NFC", text.lower())
    return text or None


def _fold_ascii(text: str) -> str:
    """What every database's ``lower()`` does at least: ASCII letters folded, the rest kept."""
    return "".join(c.lower() if c.isascii() else c for c in text)


def _database_lowers(char: str) -> set[str]:
    """Every ``lower()`` a supported database may give one stored character: kept (SQLite, a
    ``C`` collation), the simple one-character mapping (glibc) or the full mapping (ICU, with
    the final-sigma rule)."""
    full = char.lower()
    forms = {char, full, full[0]}  # U+0130: full "i̇", simple "i"
    if char == "\u03a3":  # capital sigma: final ς where ICU sees the end of a word
        forms.add("\u03c2")
    return forms


@lru_cache(maxsize=1)
def _stored_forms() -> dict[str, frozenset[str]]:
    """A piece of a normalised address (one character, or two for ``i̇``) -> every key a stored
    character that :func:`normalize_email` turns into that piece can have in the database.

    ``ä`` <- ``Ä``; ``ß`` <- ``ẞ``; ``k`` <- the Kelvin sign; ``ω`` <- the Ohm sign; ``ς`` <-
    ``Σ`` stored as ``Σ``, ``σ`` or ``ς``; ``i̇`` <- ``İ`` stored as ``İ``, ``i`` or ``i̇``.
    """
    forms: dict[str, set[str]] = {}
    for code in range(0x41, 0x110000):
        char = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        targets = {unicodedata.normalize("NFC", unicodedata.normalize("NFC", char).lower())}
        if char == "\u03a3":
            targets.add("\u03c2")  # Python lowers a word-final capital sigma to ς
        for target in targets:
            if target != char and len(target) <= 2:
                forms.setdefault(target, set()).update(_database_lowers(char))
    return {target: frozenset(keys) for target, keys in forms.items()}


@lru_cache(maxsize=4096)
def _piece_options(piece: str) -> frozenset[str]:
    """Keys one piece of a normalised address can have: the piece itself or a stored character
    that lowers to it, each composed (NFC) or decomposed (NFD, the database folding its ASCII)."""
    options = {piece} | set(_stored_forms().get(piece, ()))
    return frozenset(
        {_fold_ascii(o) for o in options} | {_fold_ascii(unicodedata.normalize("NFD", o)) for o in options}
    )


P = ParamSpec("P")
R = TypeVar("R")
# Addresses whose candidates were computed in the current email_keys_remembered() block.
_REMEMBERED: ContextVar[dict[str, frozenset[str] | None] | None] = ContextVar("email_keys", default=None)


@contextmanager
def email_keys_remembered() -> Iterator[None]:
    """Within the block, each address's :func:`email_key_candidates` are computed once (a batch
    looks every address up in each collection with an email column); they are forgotten when it
    ends, so no subject's address outlives the batch in the process's memory."""
    if _REMEMBERED.get() is not None:
        yield
        return
    token = _REMEMBERED.set({})
    try:
        yield
    finally:
        _REMEMBERED.reset(token)


def remembering_email_keys(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` (a batch's lookups) in an :func:`email_keys_remembered` block."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with email_keys_remembered():
            return func(*args, **kwargs)

    return wrapper


def email_key_candidates(email: str) -> frozenset[str] | None:
    """:func:`_email_key_candidates`, remembered inside an :func:`email_keys_remembered` block."""
    remembered = _REMEMBERED.get()
    if remembered is None:
        return _email_key_candidates(email)
    if email not in remembered:
        remembered[email] = _email_key_candidates(email)
    return remembered[email]


def _email_key_candidates(email: str) -> frozenset[str] | None:
    """Every value ``lower(trim(column, WHITESPACE))`` can have, on any supported database and
    collation, for a stored address whose :func:`normalize_email` is ``email``.

    The address is read as pieces (characters, and the two-character lower case of ``İ``); each
    piece may be stored in any case form, composed or decomposed, independently of the others.

    :param email: an address already normalised with :func:`normalize_email`.
    :returns: the candidate keys, or None when there would be more than
        :data:`MAX_EMAIL_CANDIDATES` (look such an address up without the index).
    """
    stored = _stored_forms()
    # ways[i]: the keys of email[i:], built from the end; None once there are too many.
    ways: list[set[str] | None] = [set() for _ in range(len(email))] + [{""}]
    for i in range(len(email) - 1, -1, -1):
        found: set[str] = set()
        for size in (1, 2):
            piece = email[i : i + size]
            if len(piece) < size or (size == 2 and piece not in stored):
                continue
            rest = ways[i + size]
            if rest is None:
                ways[i] = None
                break
            options = _piece_options(piece)
            if len(options) * len(rest) + len(found) > MAX_EMAIL_CANDIDATES:
                ways[i] = None
                break
            found |= {o + r for o in options for r in rest}
        else:
            ways[i] = found
            continue
        return None
    keys = ways[0]
    return frozenset(keys) if keys is not None else None


# -- phones -------------------------------------------------------------------------------


# phonenumbers reads ASCII spaces, hyphens and round brackets between digits, not every form
# of them: the others are mapped onto those first (the same characters the digits key drops).
PHONE_TYPING = str.maketrans({**dict.fromkeys(WHITESPACE, " "), **dict.fromkeys(PHONE_DASHES, "-"), "[": "(", "]": ")"})


def parse_phone(raw: str | None, region: str | None = None):
    """The ``phonenumbers.PhoneNumber`` of ``raw`` read in ``region``, or None if it is no possible number."""
    import phonenumbers

    if raw is None:
        return None
    text = raw.strip(WHITESPACE).translate(PHONE_TYPING)
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
