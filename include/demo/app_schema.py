"""Tables of the Fabconnect platform database as the demo world builds them.

In production this schema belongs to the platform team; the DSR engine only reads it
through the data map. Columns that erasure may null (names, password hash, payout bank
details, an order's address link) are nullable on purpose. Every identity column has an index
on the key lookups use (:mod:`include.dsr.core.sql_keys`): emails on ``lower(trim(email, <any
whitespace>))``, free-text phones on their digits, E.164 phones on the column itself.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

from include.dsr.core.sql_keys import email_key, phone_digits_key

metadata = MetaData()


def _email_index(table: Table, column: str) -> None:
    Index(f"ix_{table.name}_{column}_norm", email_key(table.c[column]))


def _phone_digits_index(table: Table, column: str) -> None:
    Index(f"ix_{table.name}_{column}_digits", phone_digits_key(table.c[column]))


manufacturing_partners = Table(
    "manufacturing_partners",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(40), nullable=False, unique=True),
    Column("legal_name", String(200), nullable=False),
    Column("country", String(2), nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("role", String(20), nullable=False),  # customer | partner_user
    Column("partner_id", Integer, ForeignKey("manufacturing_partners.id"), index=True),
    Column("first_name", String(100)),
    Column("last_name", String(100)),
    Column("email", String(254), nullable=False),
    Column("phone", String(32), index=True),
    Column("company", String(200)),
    Column("job_title", String(120)),
    Column("password_hash", String(128)),
    Column("country", String(2), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("last_login_at", DateTime),
)
_email_index(accounts, "email")
_phone_digits_index(accounts, "phone")  # free text: people type their profile phone as they like

addresses = Table(
    "addresses",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("kind", String(10), nullable=False),  # billing | shipping
    Column("recipient_name", String(200), nullable=False),
    Column("line1", String(200), nullable=False),
    Column("city", String(100), nullable=False),
    Column("postal_code", String(20), nullable=False),
    Column("country", String(2), nullable=False),
)

quotes = Table(
    "quotes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("created_at", DateTime, nullable=False),
    Column("process", String(40), nullable=False),
    Column("material", String(60), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("price_eur", Numeric(12, 2), nullable=False),
    Column("spec_object_key", String(300), nullable=False),  # CAD file in the platform bucket
    Column("notes", Text),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("quote_id", Integer, ForeignKey("quotes.id"), nullable=False, index=True),
    Column("partner_id", Integer, ForeignKey("manufacturing_partners.id"), nullable=False, index=True),
    Column("shipping_address_id", Integer, ForeignKey("addresses.id")),
    Column("status", String(20), nullable=False),
    Column("total_eur", Numeric(12, 2), nullable=False),
    Column("ordered_at", DateTime, nullable=False),
    Column("shipped_at", DateTime),
)

invoices = Table(
    "invoices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=False, index=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("invoice_number", String(30), nullable=False, unique=True),
    Column("issued_at", Date, nullable=False),
    Column("billing_name", String(200), nullable=False),
    Column("billing_company", String(200)),
    Column("billing_address", String(400), nullable=False),
    Column("vat_id", String(20)),
    Column("net_eur", Numeric(12, 2), nullable=False),
    Column("tax_eur", Numeric(12, 2), nullable=False),
)

payment_methods = Table(
    "payment_methods",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("processor", String(40), nullable=False),  # payment partner slug
    Column("processor_token", String(64), nullable=False, unique=True),
    Column("brand", String(20), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("exp_month", Integer, nullable=False),
    Column("exp_year", Integer, nullable=False),
)

payout_accounts = Table(
    "payout_accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("card_program", String(40), nullable=False),  # card-program partner slug
    Column("account_holder", String(200), nullable=False),
    Column("iban", String(34)),
    Column("bic", String(11)),
    Column("tax_id", String(20), nullable=False),
)

partner_profiles = Table(
    "partner_profiles",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("partner_id", Integer, ForeignKey("manufacturing_partners.id"), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("bio", Text),
    Column("published", Boolean, nullable=False),
)

support_tickets = Table(
    "support_tickets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), index=True),
    Column("contact_email", String(254), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("status", String(20), nullable=False),
)
_email_index(support_tickets, "contact_email")

chatbot_transcripts = Table(
    "chatbot_transcripts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("visitor_email", String(254)),  # keyed only by email and/or phone, no account
    Column("visitor_phone", String(32), index=True),
    Column("visitor_name", String(200)),
    Column("started_at", DateTime, nullable=False),
    Column("transcript", Text, nullable=False),
)
_email_index(chatbot_transcripts, "visitor_email")
_phone_digits_index(chatbot_transcripts, "visitor_phone")

sms_messages = Table(
    "sms_messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("phone", String(32), nullable=False, index=True),
    Column("direction", String(8), nullable=False),  # inbound | outbound
    Column("body", Text, nullable=False),
    Column("sent_at", DateTime, nullable=False),
)

feedback_emails = Table(
    "feedback_emails",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("from_email", String(254), nullable=False),
    Column("from_name", String(200)),
    Column("subject", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("received_at", DateTime, nullable=False),
)
_email_index(feedback_emails, "from_email")

survey_responses = Table(
    "survey_responses",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), index=True),
    Column("respondent_email", String(254), nullable=False),
    Column("survey_code", String(30), nullable=False),
    Column("answers_json", Text, nullable=False),
    Column("submitted_at", DateTime, nullable=False),
)
_email_index(survey_responses, "respondent_email")

id_documents = Table(
    "id_documents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("doc_type", String(20), nullable=False),
    Column("object_key", String(300), nullable=False),  # copy in the platform bucket
    Column("uploaded_at", DateTime, nullable=False),
    Column("checked_at", DateTime),
)

marketing_preferences = Table(
    "marketing_preferences",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, unique=True),
    Column("newsletter", Boolean, nullable=False),
    Column("product_updates", Boolean, nullable=False),
    Column("consent_at", DateTime),
    Column("consent_source", String(40)),
)

# What the marketing team's newsletter job sent to whom (include.demo.downstream).
marketing_sends = Table(
    "marketing_sends",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("campaign", String(80), nullable=False),
    Column("sent_at", DateTime, nullable=False),
)

suppression_list = Table(
    "suppression_list",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email_hash", String(64), nullable=False, unique=True),  # HMAC of the normalised email
    Column("reason", String(40), nullable=False),
    Column("added_at", DateTime, nullable=False),
)

testimonials = Table(
    "testimonials",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("display_name", String(200), nullable=False),
    Column("quote_text", Text, nullable=False),
    Column("consent_at", DateTime, nullable=False),
    Column("published", Boolean, nullable=False),
)

web_logs = Table(
    "web_logs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), index=True),  # NULL when logged out
    Column("ip_address", String(45), nullable=False),
    Column("user_agent", String(300), nullable=False),
    Column("path", String(300), nullable=False),
    Column("requested_at", DateTime, nullable=False),
)

pricing_features = Table(
    "pricing_features",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, unique=True),
    Column("price_sensitivity", Numeric(5, 3), nullable=False),
    Column("segment", String(30), nullable=False),
    Column("predicted_annual_spend_eur", Numeric(12, 2), nullable=False),
    Column("computed_at", DateTime, nullable=False),
)
