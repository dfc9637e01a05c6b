"""Turn the demo people into rows: platform tables, object-store files, partner copies.

The generator is pure: it calls a ``WorldSink`` for every row, object and ground-truth
fact, and the sink decides where they go (``world.py`` writes SQLite/Postgres, S3 and the
partner files). Rows carry no hidden owner column; ownership lives only in the ground truth,
together with whether the exact-matching rules can link the row to its owner at all
(an SMS from a shared company line cannot be attributed to either colleague).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from include.demo.people import KIND_CUSTOMER, KIND_PARTNER_USER, KIND_VISITOR, Person
from include.dsr.core.identities import normalize_email
from include.dsr.core.pii import keyed_hash

APP = "fabconnect_app"
S3 = "fabconnect_s3"
EPOCH = datetime(2026, 11, 1, 9, 0, 0)  # the demo world's "now": fixed for determinism


@dataclass(frozen=True)
class DemoPartner:
    slug: str
    role: str  # payment_processor | card_program | manufacturing
    channel: str  # api | s3_dropbox | manual
    legal_name: str
    country: str


PAYMENT_PROCESSOR = DemoPartner("payflow", "payment_processor", "api", "PayFlow Payments Ltd", "IE")
CARD_PROGRAM = DemoPartner("cardworks", "card_program", "api", "CardWorks Europe S.A.", "LU")
MANUFACTURERS = (
    DemoPartner("precision-parts-gmbh", "manufacturing", "api", "Precision Parts GmbH", "DE"),
    DemoPartner("lasercut-bv", "manufacturing", "api", "LaserCut B.V.", "NL"),
    DemoPartner("cnc-works-sro", "manufacturing", "api", "CNC Works s.r.o.", "CZ"),
    DemoPartner("anodize-lab-srl", "manufacturing", "s3_dropbox", "Anodize Lab S.r.l.", "IT"),
    DemoPartner("polymer-print-ab", "manufacturing", "s3_dropbox", "Polymer Print AB", "SE"),
    DemoPartner("forge-and-weld-ltd", "manufacturing", "manual", "Forge & Weld Ltd", "IE"),
)
PARTNERS = (PAYMENT_PROCESSOR, CARD_PROGRAM, *MANUFACTURERS)

PROCESSES = ("cnc_milling", "cnc_turning", "laser_cutting", "sheet_metal", "3d_printing", "anodizing")
MATERIALS = ("aluminium 6061", "stainless 316L", "steel S235", "PA12", "titanium Gr5", "brass CW614N")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
)
PATHS = ("/", "/quote/new", "/orders", "/account", "/partners", "/pricing", "/upload")
STREETS = ("Hauptstraße", "Rue de la Paix", "Via Roma", "Main Street", "Storgatan")
CITIES = ("Berlin", "Lyon", "Milano", "Madrid", "Kraków", "Göteborg", "Dublin", "Utrecht", "Brno")
TICKET_SUBJECTS = ("Delivery delayed", "Invoice question", "Tolerance on drawing", "Change shipping address")


class WorldSink(Protocol):
    """Where the generator puts what it makes."""

    def add_row(self, target: str, table: str, row: dict, owner: str | None, linkable: bool = True) -> None: ...

    def add_object(self, key: str, body: bytes, owner: str) -> None: ...


class _Ids:
    """Deterministic per-table id counters."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def __call__(self, table: str) -> int:
        value = self._next.get(table, 0) + 1
        self._next[table] = value
        return value


class WorldGenerator:
    """Emit the rows of the demo world for a list of people.

    :param sink: receives rows, objects and ownership facts
    :param seed: makes the world deterministic
    :param hash_secret: secret of the suppression list's keyed email hash
    """

    def __init__(self, sink: WorldSink, seed: int, hash_secret: str) -> None:
        self.sink = sink
        self.rng = random.Random(seed ^ 0x5EED)
        self.hash_secret = hash_secret
        self.ids = _Ids()
        self.partner_ids = {p.slug: i for i, p in enumerate(MANUFACTURERS, start=1)}
        self.shared_phones: set[str] = set()

    def run(self, people: list[Person], on_person=None) -> None:
        """Emit the world; ``on_person(1)`` is called after each person (progress bars)."""
        phones = [p.phone for p in people if p.kind != KIND_VISITOR]
        self.shared_phones = _duplicates(phones)
        for i, partner in enumerate(MANUFACTURERS, start=1):
            self.sink.add_row(
                APP,
                "manufacturing_partners",
                {
                    "id": i,
                    "slug": partner.slug,
                    "legal_name": partner.legal_name,
                    "country": partner.country,
                },
                owner=None,
            )
        for person in people:
            if person.kind == KIND_VISITOR:
                self._visitor(person)
            else:
                self._account_holder(person)
            if on_person:
                on_person(1)
        self._anonymous_traffic(len(people))

    # -- helpers ------------------------------------------------------------------------
    def _ts(self, days_back_max: int = 3650) -> datetime:
        return EPOCH - timedelta(days=self.rng.randrange(1, days_back_max), seconds=self.rng.randrange(86400))

    def _app(self, table: str, row: dict, owner: str | None, linkable: bool = True) -> dict:
        row = {"id": self.ids(table), **row}
        self.sink.add_row(APP, table, row, owner, linkable)
        return row

    def _partner(self, slug: str, table: str, person: Person, row: dict) -> None:
        row = {"id": self.ids(f"{slug}.{table}"), "email": self._email_as_written(person), "phone": person.phone, **row}
        self.sink.add_row(slug, table, row, person.key)

    def _email_as_written(self, person: Person) -> str:
        if person.email_variant and self.rng.random() < 0.5:
            return person.email_variant
        return person.email

    def _phone_linkable(self, phone: str) -> bool:
        return phone not in self.shared_phones

    def _count(self, person: Person, low: int, high: int, minimum_if_hard: int = 1) -> int:
        n = self.rng.randint(low, high)
        return max(n, minimum_if_hard) if person.hard_case else n

    def _chance(self, person: Person, p: float) -> bool:
        return bool(person.hard_case) or self.rng.random() < p

    # -- people -------------------------------------------------------------------------
    def _account_holder(self, person: Person) -> None:
        partner_slug = None
        if person.kind == KIND_PARTNER_USER:
            partner_slug = "cnc-works-sro" if person.hard_case else self.rng.choice(MANUFACTURERS).slug
        created = self._ts()
        account = self._app(
            "accounts",
            {
                "role": person.kind,
                "partner_id": self.partner_ids.get(partner_slug),
                "first_name": person.first_name,
                "last_name": person.last_name,
                "email": person.email,
                "phone": person.phone,
                "company": person.company,
                "job_title": person.job_title,
                "password_hash": "pbkdf2_sha256$600000$" + f"{self.rng.getrandbits(128):032x}",
                "country": person.country,
                "created_at": created,
                "last_login_at": created + timedelta(days=self.rng.randrange(0, 400)),
            },
            person.key,
        )
        account_id = account["id"]
        billing = self._address(person, account_id, "billing")
        shipping = self._address(person, account_id, "shipping") if self.rng.random() < 0.5 else billing
        if person.kind == KIND_CUSTOMER:
            self._customer_business(person, account_id, shipping, billing)
        else:
            self._partner_user_business(person, account_id, partner_slug)
        self._contact_traces(person, account_id)
        self._app(
            "marketing_preferences",
            {
                "account_id": account_id,
                "newsletter": self.rng.random() < 0.4,
                "product_updates": self.rng.random() < 0.6,
                "consent_at": created,
                "consent_source": "signup_form",
            },
            person.key,
        )
        if self.rng.random() < 0.03 or person.hard_case == "case_email":
            self._app(
                "suppression_list",
                {
                    "email_hash": keyed_hash(normalize_email(person.email), self.hash_secret),
                    "reason": "unsubscribed",
                    "added_at": self._ts(700),
                },
                person.key,
            )
        for _ in range(self._count(person, 0, 6)):
            self._app("web_logs", self._web_hit(account_id), person.key)

    def _address(self, person: Person, account_id: int, kind: str) -> dict:
        return self._app(
            "addresses",
            {
                "account_id": account_id,
                "kind": kind,
                "recipient_name": person.full_name,
                "line1": f"{self.rng.randrange(1, 200)} {self.rng.choice(STREETS)}",
                "city": self.rng.choice(CITIES),
                "postal_code": f"{self.rng.randrange(10000, 99999)}",
                "country": person.country,
            },
            person.key,
        )

    def _customer_business(self, person: Person, account_id: int, shipping: dict, billing: dict) -> None:
        tokens = []
        n_quotes = self._count(person, 0, 4, minimum_if_hard=2)
        if n_quotes:
            for _ in range(1 if self.rng.random() < 0.8 else 2):
                token = f"pm_{self.rng.getrandbits(64):016x}"
                tokens.append(token)
                self._app(
                    "payment_methods",
                    {
                        "account_id": account_id,
                        "processor": PAYMENT_PROCESSOR.slug,
                        "processor_token": token,
                        "brand": self.rng.choice(("visa", "mastercard", "amex")),
                        "last4": f"{self.rng.randrange(10000):04d}",
                        "exp_month": self.rng.randint(1, 12),
                        "exp_year": self.rng.randint(2026, 2031),
                    },
                    person.key,
                )
                self._partner(
                    PAYMENT_PROCESSOR.slug, "cards", person, {"token": token, "cardholder_name": person.full_name}
                )
            self._partner(
                PAYMENT_PROCESSOR.slug, "customers", person, {"name": person.full_name, "company": person.company}
            )
            self._app(
                "pricing_features",
                {
                    "account_id": account_id,
                    "price_sensitivity": Decimal(f"{self.rng.random():.3f}"),
                    "segment": self.rng.choice(("startup", "smb", "enterprise", "research")),
                    "predicted_annual_spend_eur": Decimal(f"{self.rng.uniform(500, 250000):.2f}"),
                    "computed_at": self._ts(30),
                },
                person.key,
            )
        for q in range(n_quotes):
            created = self._ts()
            quote = self._app(
                "quotes",
                {
                    "account_id": account_id,
                    "created_at": created,
                    "process": self.rng.choice(PROCESSES),
                    "material": self.rng.choice(MATERIALS),
                    "quantity": self.rng.choice((1, 5, 10, 50, 200)),
                    "price_eur": Decimal(f"{self.rng.uniform(40, 9000):.2f}"),
                    "spec_object_key": "",
                    "notes": self.rng.choice(
                        (None, "Please deburr all edges.", f"Contact {person.first_name} for questions.")
                    ),
                },
                person.key,
            )
            quote["spec_object_key"] = f"specs/{quote['id']}/part-{quote['id']}.step"
            self.sink.add_object(quote["spec_object_key"], _step_file(person, quote["id"]), person.key)
            if q == 0 and person.hard_case or self.rng.random() < 0.6:
                self._order(person, account_id, quote, shipping, billing, tokens)

    def _order(self, person: Person, account_id: int, quote: dict, shipping: dict, billing: dict, tokens: list) -> None:
        partner = self.rng.choice(MANUFACTURERS)
        ordered = quote["created_at"] + timedelta(days=self.rng.randrange(1, 20))
        total = quote["price_eur"]
        order = self._app(
            "orders",
            {
                "account_id": account_id,
                "quote_id": quote["id"],
                "partner_id": self.partner_ids[partner.slug],
                "shipping_address_id": shipping["id"],
                "status": self.rng.choice(("delivered", "shipped", "in_production")),
                "total_eur": total,
                "ordered_at": ordered,
                "shipped_at": ordered + timedelta(days=10),
            },
            person.key,
        )
        net = (total / Decimal("1.19")).quantize(Decimal("0.01"))
        self._app(
            "invoices",
            {
                "order_id": order["id"],
                "account_id": account_id,
                "invoice_number": f"FC-{order['id']:08d}",
                "issued_at": ordered.date(),
                "billing_name": person.full_name,
                "billing_company": person.company,
                "billing_address": (
                    f"{billing['line1']}, {billing['postal_code']} {billing['city']}, {billing['country']}"
                ),
                "vat_id": f"{person.country}{self.rng.randrange(10**8, 10**9)}" if person.company else None,
                "net_eur": net,
                "tax_eur": total - net,
            },
            person.key,
        )
        self._partner(
            partner.slug,
            "order_packages",
            person,
            {
                "order_ref": f"FC-{order['id']:08d}",
                "customer_name": person.full_name,
                "company": person.company,
                "ship_line1": shipping["line1"],
                "ship_city": shipping["city"],
                "ship_postal_code": shipping["postal_code"],
                "ship_country": shipping["country"],
                "spec_file_name": f"part-{quote['id']}.step",
                "received_at": ordered.isoformat(),
            },
        )
        if tokens:
            self._partner(
                PAYMENT_PROCESSOR.slug,
                "charges",
                person,
                {
                    "order_ref": f"FC-{order['id']:08d}",
                    "token": self.rng.choice(tokens),
                    "amount_eur": str(total),
                    "charged_at": ordered.isoformat(),
                },
            )

    def _partner_user_business(self, person: Person, account_id: int, partner_slug: str) -> None:
        self._app(
            "payout_accounts",
            {
                "account_id": account_id,
                "card_program": CARD_PROGRAM.slug,
                "account_holder": person.full_name,
                "iban": f"DE{self.rng.randrange(10, 99)}{self.rng.randrange(10**17, 10**18)}",
                "bic": "FABCDEFFXXX",
                "tax_id": f"{self.rng.randrange(10**10, 10**11)}",
            },
            person.key,
        )
        self._app(
            "partner_profiles",
            {
                "account_id": account_id,
                "partner_id": self.partner_ids[partner_slug],
                "display_name": person.full_name,
                "bio": f"{person.job_title} at {person.company}",
                "published": self.rng.random() < 0.7,
            },
            person.key,
        )
        self._partner(CARD_PROGRAM.slug, "cardholders", person, {"name": person.full_name, "company": person.company})
        for _ in range(self._count(person, 0, 3)):
            self._partner(
                CARD_PROGRAM.slug,
                "payouts",
                person,
                {
                    "amount_eur": f"{self.rng.uniform(100, 20000):.2f}",
                    "paid_at": self._ts(700).isoformat(),
                },
            )
        if self._chance(person, 0.4):
            self._id_document(person, account_id)

    def _id_document(self, person: Person, account_id: int) -> None:
        doc = self._app(
            "id_documents",
            {
                "account_id": account_id,
                "doc_type": self.rng.choice(("passport", "id_card")),
                "object_key": "",
                "uploaded_at": self._ts(900),
                "checked_at": None,
            },
            person.key,
        )
        doc["object_key"] = f"id-documents/{account_id}/{doc['id']}.pdf"
        self.sink.add_object(doc["object_key"], _pdf_stub(person), person.key)

    def _contact_traces(self, person: Person, account_id: int) -> None:
        for _ in range(self._count(person, 0, 2)):
            self._app(
                "support_tickets",
                {
                    "account_id": account_id if self.rng.random() < 0.8 else None,
                    "contact_email": person.email_variant or person.email,
                    "subject": self.rng.choice(TICKET_SUBJECTS),
                    "body": f"Hello, this is {person.first_name}. Order question.",
                    "created_at": self._ts(),
                    "status": self.rng.choice(("open", "closed")),
                },
                person.key,
            )
        if self._chance(person, 0.10):
            self._chat(person, with_email=True)
        if self._chance(person, 0.05):
            self._chat(person, with_email=False)
        if self._chance(person, 0.08):
            self._sms(person)
        if self._chance(person, 0.2):
            self._app(
                "survey_responses",
                {
                    "account_id": account_id if self.rng.random() < 0.7 else None,
                    "respondent_email": person.email_variant or person.email,
                    "survey_code": "NPS-2026",
                    "answers_json": json.dumps({"nps": self.rng.randint(0, 10)}),
                    "submitted_at": self._ts(400),
                },
                person.key,
            )
        if self._chance(person, 0.05):
            self._feedback(person)
        if person.kind == KIND_CUSTOMER and self.rng.random() < 0.03:
            self._id_document(person, account_id)
        if self.rng.random() < 0.02:
            self._app(
                "testimonials",
                {
                    "account_id": account_id,
                    "display_name": f"{person.first_name} {person.last_name[0]}.",
                    "quote_text": "Parts arrived on time and in spec.",
                    "consent_at": self._ts(800),
                    "published": True,
                },
                person.key,
            )

    def _visitor(self, person: Person) -> None:
        self._chat(person, with_email=True)
        self._sms(person)
        if self._chance(person, 0.5):
            self._feedback(person)

    def _chat(self, person: Person, with_email: bool) -> None:
        self._app(
            "chatbot_transcripts",
            {
                "visitor_email": (person.email_variant or person.email) if with_email else None,
                "visitor_phone": person.phone if (not with_email or self.rng.random() < 0.5) else None,
                "visitor_name": person.first_name if self.rng.random() < 0.5 else None,
                "started_at": self._ts(500),
                "transcript": f"bot: How can I help?\nvisitor: I am {person.first_name}, I need a quote.",
            },
            person.key,
            linkable=with_email or self._phone_linkable(person.phone),
        )

    def _sms(self, person: Person) -> None:
        sent = self._ts(500)
        linkable = self._phone_linkable(person.phone)
        self._app(
            "sms_messages",
            {"phone": person.phone, "direction": "inbound", "body": "Where is my order?", "sent_at": sent},
            person.key,
            linkable,
        )
        self._app(
            "sms_messages",
            {
                "phone": person.phone,
                "direction": "outbound",
                "body": "It ships tomorrow.",
                "sent_at": sent + timedelta(minutes=3),
            },
            person.key,
            linkable,
        )

    def _feedback(self, person: Person) -> None:
        self._app(
            "feedback_emails",
            {
                "from_email": person.email_variant or person.email,
                "from_name": person.full_name,
                "subject": "Feedback",
                "body": f"Great service. Regards, {person.full_name}",
                "received_at": self._ts(600),
            },
            person.key,
        )

    def _web_hit(self, account_id: int | None) -> dict:
        return {
            "account_id": account_id,
            "ip_address": (
                f"{self.rng.randrange(1, 223)}.{self.rng.randrange(256)}."
                f"{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"
            ),
            "user_agent": self.rng.choice(USER_AGENTS),
            "path": self.rng.choice(PATHS),
            "requested_at": self._ts(365),
        }

    def _anonymous_traffic(self, n_people: int) -> None:
        for _ in range(max(10, n_people // 5)):
            self._app("web_logs", self._web_hit(None), owner=None)


def _duplicates(values: list[str]) -> set[str]:
    seen: set[str] = set()
    dup: set[str] = set()
    for v in values:
        (dup if v in seen else seen).add(v)
    return dup


def _step_file(person: Person, quote_id: int) -> bytes:
    return (
        f"ISO-10303-21;\nHEADER;\nFILE_NAME('part-{quote_id}.step','{EPOCH.date()}',"
        f"('{person.full_name}'),('{person.company or ''}'),'','','');\nENDSEC;\nDATA;\nENDSEC;\n"
        "END-ISO-10303-21;\n"
    ).encode()


def _pdf_stub(person: Person) -> bytes:
    return f"%PDF-1.4\n% identity document copy of {person.full_name}\n%%EOF\n".encode()


def today() -> date:
    """The demo world's current date (fixed, so retention and SLA figures are repeatable)."""
    return EPOCH.date()
