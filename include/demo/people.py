"""The people of the demo world: deterministic persons plus the hard identity cases.

Every person gets a stable ``person_key`` (``P0000001``). The hard cases exist in every
world, whatever its size, because they are what exact matching must get right:

* ``case_email``: one person whose email appears with other case and spaces in other tables;
* ``near_email``: a different person whose email differs from ``case_email``'s by one letter;
* ``same_name_company``: two different people with the same name at the same company;
* ``shared_phone``: two colleagues whose accounts carry the same company phone line;
* ``unicode_name``: names outside ASCII;
* ``sql_meta_email``: an email holding SQL/shell metacharacters (``o'brien+test@example.com``);
* ``chat_sms_only``: a visitor known only from the chatbot, SMS and feedback email.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from functools import cache

FIRST_NAMES = (
    "Anna",
    "Lukas",
    "Sophie",
    "Jonas",
    "Marie",
    "Felix",
    "Emma",
    "Paul",
    "Lena",
    "Noah",
    "Chloé",
    "Louis",
    "Camille",
    "Hugo",
    "Giulia",
    "Marco",
    "Sofia",
    "Luca",
    "Lucía",
    "Javier",
    "Carmen",
    "Pablo",
    "Agnieszka",
    "Piotr",
    "Katarzyna",
    "Tomasz",
    "Astrid",
    "Erik",
    "Ingrid",
    "Lars",
    "Siobhán",
    "Conor",
    "Aoife",
    "Liam",
    "Olivia",
    "James",
    "Mia",
    "Daniel",
    "Eva",
    "Jan",
    "Petra",
    "Martin",
    "Sanne",
    "Daan",
    "Fatima",
    "Omar",
    "Aylin",
    "Emre",
    "Yuki",
    "Chen",
)
LAST_NAMES = (
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Martin",
    "Bernard",
    "Dubois",
    "Laurent",
    "Rossi",
    "Russo",
    "Ferrari",
    "Bianchi",
    "García",
    "Fernández",
    "López",
    "Martínez",
    "Kowalski",
    "Nowak",
    "Wiśniewska",
    "Andersson",
    "Johansson",
    "Karlsson",
    "Murphy",
    "Kelly",
    "O'Sullivan",
    "Walsh",
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "de Vries",
    "Jansen",
    "van Dijk",
    "Novák",
    "Svoboda",
    "Dvořák",
    "Yılmaz",
    "Kaya",
    "Haddad",
    "Tanaka",
    "Wang",
)
COMPANY_WORDS = (
    "Precision",
    "Dynamics",
    "Robotics",
    "Tooling",
    "Motion",
    "Fluidics",
    "Optics",
    "Aero",
    "Medtech",
    "Automation",
    "Mechatronics",
    "Instruments",
    "Energy",
    "Drives",
    "Sensors",
)
COMPANY_SUFFIXES = ("GmbH", "SAS", "S.r.l.", "S.L.", "B.V.", "AB", "Ltd", "s.r.o.", "Sp. z o.o.", "Inc.")
JOB_TITLES = (
    "Mechanical Engineer",
    "Purchasing Manager",
    "Design Engineer",
    "CTO",
    "Procurement Lead",
    "R&D Engineer",
    "Operations Manager",
    "Founder",
    "Production Planner",
    "Hardware Engineer",
)
COUNTRIES = ("DE", "FR", "IT", "ES", "PL", "SE", "IE", "NL", "CZ", "AT", "US")
PHONE_PREFIX = {
    "DE": "49",
    "FR": "33",
    "IT": "39",
    "ES": "34",
    "PL": "48",
    "SE": "46",
    "IE": "353",
    "NL": "31",
    "CZ": "420",
    "AT": "43",
    "US": "1",
}

# Letters NFKD does not decompose into ASCII + accent.
_NON_DECOMPOSING = str.maketrans({"ł": "l", "ø": "o", "ß": "ss", "æ": "ae", "ı": "i"})

KIND_CUSTOMER = "customer"
KIND_PARTNER_USER = "partner_user"
KIND_VISITOR = "visitor"  # no account: only chatbot / SMS / feedback traces


@dataclass(frozen=True)
class Person:
    """One human in the demo world (ground truth, never stored in the platform DB as such)."""

    key: str
    kind: str
    first_name: str
    last_name: str
    email: str
    phone: str
    company: str | None
    job_title: str | None
    country: str
    hard_case: str | None = None
    # How this person's email is written in secondary tables (tickets, chat); default = email.
    email_variant: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


def _ascii_slug(text: str) -> str:
    folded = text.lower().translate(_NON_DECOMPOSING)
    folded = unicodedata.normalize("NFKD", folded)
    return "".join(ch for ch in folded if ch.isascii() and (ch.isalnum() or ch == "."))


def _company(rng: random.Random) -> str:
    return f"{rng.choice(LAST_NAMES)} {rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIXES)}"


def _phone(rng: random.Random, country: str, serial: int) -> str:
    # A valid mobile number of the country (its example number with the last six digits
    # replaced); the serial keeps every ordinary phone unique, shared lines are only the hard cases.
    national = str(_mobile_example(country))[:-6] + f"{(serial * 7 + rng.randrange(7)) % 10**6:06d}"
    return f"+{PHONE_PREFIX[country]}{national}"


@cache
def _mobile_example(country: str) -> int:
    import phonenumbers

    return phonenumbers.example_number_for_type(country, phonenumbers.PhoneNumberType.MOBILE).national_number


def hard_case_people() -> list[Person]:
    """The fixed hard identity cases, present in every world with keys H01..H10."""
    shared_line = "+46812345670"
    return [
        Person(
            "H01",
            KIND_CUSTOMER,
            "Maria",
            "Lopez",
            "maria.lopez@example.com",
            "+34911000001",
            "Lopez Fluidics S.L.",
            "Design Engineer",
            "ES",
            "case_email",
            email_variant="  Maria.Lopez@Example.COM ",
        ),
        Person(
            "H02",
            KIND_CUSTOMER,
            "Mario",
            "Lopes",
            "maria.lopes@example.com",
            "+34911000002",
            "Lopes Optics S.L.",
            "CTO",
            "ES",
            "near_email",
        ),
        Person(
            "H03",
            KIND_CUSTOMER,
            "John",
            "Smith",
            "john.smith@example.com",
            "+353861000003",
            "Acme Tooling Ltd",
            "Purchasing Manager",
            "IE",
            "same_name_company",
        ),
        Person(
            "H04",
            KIND_CUSTOMER,
            "John",
            "Smith",
            "jsmith.acme@example.com",
            "+353861000004",
            "Acme Tooling Ltd",
            "Design Engineer",
            "IE",
            "same_name_company",
        ),
        Person(
            "H05",
            KIND_CUSTOMER,
            "Astrid",
            "Berg",
            "astrid.berg@example.com",
            shared_line,
            "Nordic Fixtures AB",
            "Operations Manager",
            "SE",
            "shared_phone",
        ),
        Person(
            "H06",
            KIND_CUSTOMER,
            "Erik",
            "Lund",
            "erik.lund@example.com",
            shared_line,
            "Nordic Fixtures AB",
            "Mechanical Engineer",
            "SE",
            "shared_phone",
        ),
        Person(
            "H07",
            KIND_CUSTOMER,
            "Zoë",
            "Ågren-Łukasiewicz",
            "zoe.agren@example.com",
            "+48221000007",
            "Wiśniewska Drives Sp. z o.o.",
            "R&D Engineer",
            "PL",
            "unicode_name",
        ),
        Person(
            "H08",
            KIND_CUSTOMER,
            "Seán",
            "O'Brien",
            "o'brien+test@example.com",
            "+353861000008",
            'O\'Brien "Sensors"; Ltd',
            "Founder",
            "IE",
            "sql_meta_email",
        ),
        Person(
            "H09",
            KIND_VISITOR,
            "Visitor",
            "Only",
            "visitor.only@example.com",
            "+4915100000009",
            None,
            None,
            "DE",
            "chat_sms_only",
        ),
        Person(
            "H10",
            KIND_PARTNER_USER,
            "Jiří",
            "Dvořák",
            "jiri.dvorak@example.com",
            "+420601000010",
            "CNC Works s.r.o.",
            "Production Planner",
            "CZ",
            "unicode_name",
        ),
    ]


def generate_people(count: int, seed: int) -> list[Person]:
    """``count`` ordinary people (after the hard cases), deterministic for a seed.

    Mix: 85 % customers, 10 % manufacturing-partner users, 5 % visitors without account.
    """
    rng = random.Random(seed)
    people = hard_case_people()
    for serial in range(1, count + 1):
        country = rng.choice(COUNTRIES)
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        roll = rng.random()
        kind = KIND_CUSTOMER if roll < 0.85 else KIND_PARTNER_USER if roll < 0.95 else KIND_VISITOR
        email = f"{_ascii_slug(first)}.{_ascii_slug(last)}.{serial}@example.com"
        has_company = kind != KIND_VISITOR
        variant = None
        if rng.random() < 0.05:  # messy copies of the email in secondary tables
            variant = f" {email.upper()} " if rng.random() < 0.5 else email.title()
        people.append(
            Person(
                key=f"P{serial:07d}",
                kind=kind,
                first_name=first,
                last_name=last,
                email=email,
                phone=_phone(rng, country, serial),
                company=_company(rng) if has_company else None,
                job_title=rng.choice(JOB_TITLES) if has_company else None,
                country=country,
                email_variant=variant,
            )
        )
    return people
