"""Two of Fabconnect's own jobs, as its marketing and pricing teams would write them: each asks the
restriction registry (``include.dsr.processing.restrictions``) before it uses anyone's data.

* :func:`send_newsletter`: everyone who opted in to the newsletter, minus the suppression list,
  minus subjects whose data may not be used for marketing (restricted, objected, consent
  withdrawn). The "send" is a row per recipient in ``marketing_sends`` (the demo's stand-in for
  the mailing tool), so tests can see who got what.
* :func:`refresh_pricing_features`: recompute every customer's pricing features from their quotes,
  except for subjects whose data may not be used for pricing: their stored rows stay as they are
  (a restriction allows storage, nothing else).

Set-based: one query for the audience, one for the registry, whatever the number of subjects.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from include.demo import app_schema
from include.dsr.core.identities import normalize_email
from include.dsr.core.pii import keyed_hash
from include.dsr.processing import restrictions

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

marketing_sends = app_schema.marketing_sends


def daily_campaign(now: datetime | None = None) -> str:
    """The day's newsletter campaign, named by the controller's calendar day."""
    from include.dsr.core.calendar import CONTROLLER_TZ

    return f"newsletter-{(now or datetime.now(UTC)).astimezone(CONTROLLER_TZ):%Y-%m-%d}"


def send_newsletter(engine: Engine, secret: str, campaign: str, now: datetime | None = None) -> dict[str, int]:
    """Send ``campaign`` to the newsletter audience (idempotent per campaign and account)."""
    restrictions.ensure_schema(engine)
    prefs, accounts = app_schema.marketing_preferences, app_schema.accounts
    audience = select(accounts.c.id, accounts.c.email).join(prefs, prefs.c.account_id == accounts.c.id)
    with engine.connect() as conn:
        opted_in = conn.execute(audience.where(prefs.c.newsletter.is_(True))).all()
        suppressed = set(conn.execute(select(app_schema.suppression_list.c.email_hash)).scalars())
        already = set(
            conn.execute(select(marketing_sends.c.account_id).where(marketing_sends.c.campaign == campaign)).scalars()
        )
    blocked_accounts = restrictions.restricted_accounts(engine, "marketing")
    blocked_hashes = restrictions.restricted_hashes(engine, "marketing")
    counts = {"opted_in": len(opted_in), "suppressed": 0, "restricted": 0, "already_sent": 0, "sent": 0}
    rows = []
    at = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    for account_id, email in opted_in:
        address = normalize_email(email)
        if account_id in blocked_accounts or (
            address and restrictions.key_hash("email", address, secret) in blocked_hashes
        ):
            counts["restricted"] += 1
        elif address is None or keyed_hash(address, secret) in suppressed:
            counts["suppressed"] += 1
        elif account_id in already:
            counts["already_sent"] += 1
        else:
            rows.append({"campaign": campaign, "account_id": account_id, "sent_at": at})
    if rows:
        with engine.begin() as conn:
            conn.execute(marketing_sends.insert(), rows)
    counts["sent"] = len(rows)
    log.info("newsletter %s: %s", campaign, counts)  # counts only
    return counts


def refresh_pricing_features(engine: Engine, now: datetime | None = None) -> dict[str, int]:
    """Recompute pricing features from quotes for every customer not restricted for pricing."""
    restrictions.ensure_schema(engine)
    quotes, features = app_schema.quotes, app_schema.pricing_features
    at = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    per_account = select(
        quotes.c.account_id, func.count().label("quotes"), func.avg(quotes.c.price_eur).label("avg_price")
    ).group_by(quotes.c.account_id)
    blocked = restrictions.restricted_accounts(engine, "pricing")
    counts = {"accounts": 0, "refreshed": 0, "restricted": 0}
    with engine.begin() as conn:
        existing = set(conn.execute(select(features.c.account_id)).scalars())
        for account_id, count, avg_price in conn.execute(per_account).all():
            counts["accounts"] += 1
            if account_id in blocked:
                counts["restricted"] += 1
                continue
            values = _features(int(count), float(avg_price or 0), at)
            if account_id in existing:
                conn.execute(features.update().where(features.c.account_id == account_id).values(**values))
            else:
                conn.execute(features.insert().values(account_id=account_id, **values))
            counts["refreshed"] += 1
    log.info("pricing features refreshed: %s", counts)
    return counts


def _features(quotes: int, avg_price: float, at: datetime) -> dict:
    sensitivity = round(min(0.999, 1.0 / (1.0 + avg_price / 500.0)), 3)
    segment = "high_volume" if quotes >= 5 else "occasional" if quotes >= 2 else "new"
    return {
        "price_sensitivity": sensitivity,
        "segment": segment,
        "predicted_annual_spend_eur": round(avg_price * max(quotes, 1) * 1.5, 2),
        "computed_at": at,
    }
