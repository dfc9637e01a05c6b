"""``dsr hold add | list | release`` against a ledger (SQLite and PostgreSQL) and a platform DB.

Every add and release is an event of the ledger's chain; an email hold stores the keyed hash and
the accounts holding the email, and the email is never printed or stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from include.demo import app_schema
from include.dsr.cli import context
from include.dsr.cli.app import main
from include.dsr.ledger.api import Ledger
from include.dsr.ledger.holds import LegalHolds
from tests.unit.cli_samples import NOW, build_sample_ledger, connection_env

EMAIL = "Held.Person@Example.COM"


@pytest.fixture
def ledger(ledger_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    ledger = build_sample_ledger(ledger_url)
    monkeypatch.setenv(context.LEDGER_CONN_ENV, connection_env(ledger_url))
    app_url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = sa.create_engine(app_url)
    app_schema.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            app_schema.accounts.insert(),
            [
                {"id": 7, "role": "customer", "email": " held.person@example.com", "country": "DE", "created_at": NOW},
                {"id": 8, "role": "customer", "email": "other@example.com", "country": "DE", "created_at": NOW},
            ],
        )
    engine.dispose()
    monkeypatch.setenv("AIRFLOW_CONN_FABCONNECT_APP", connection_env(app_url))
    monkeypatch.setattr(context, "now_utc", lambda: NOW)
    yield ledger
    ledger.close()


def dsr(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "held.person" not in (out + err).lower()
    return code, out, err


def test_holds_are_placed_listed_and_released_each_in_the_chain(ledger, capsys):
    code, out, err = dsr(
        capsys, "hold", "add", "--email", EMAIL, "--reason", "litigation 2026-17", "--until", "2027-06-30"
    )
    assert code == 0, err
    assert "placed on account 7 through 2027-06-30" in out
    code, out, _ = dsr(capsys, "hold", "add", "--collection", "support_tickets", "--reason", "tax audit")
    assert code == 0
    (by_email,) = [h for h in LegalHolds(ledger).list(NOW) if h.scope == "subject"]
    assert by_email.account_id == "7"
    assert len(by_email.key_hash) == 64
    code, out, _ = dsr(capsys, "hold", "list", "--json")
    listed = json.loads(out)
    assert {h["on"] for h in listed} == {"7", "fabconnect_app.support_tickets"}
    code, out, _ = dsr(capsys, "hold", "release", by_email.hold_id)
    assert code == 0
    assert f"hold {by_email.hold_id} released" in out
    code, out, _ = dsr(capsys, "hold", "list", "--json")
    assert [h["on"] for h in json.loads(out)] == ["fabconnect_app.support_tickets"]
    code, out, _ = dsr(capsys, "hold", "list", "--all")
    assert by_email.hold_id in out
    events = [e for e in ledger.events() if e.event_type.startswith("hold.")]
    assert [e.event_type for e in events] == ["hold.added", "hold.added", "hold.released"]
    assert "litigation" not in json.dumps([e.payload for e in events])  # the reason stays in the table
    assert ledger.verify_chain().ok


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "--account-id", "7", "--reason", " "], "needs its reason"),
        (["add", "--account-id", "7", "--reason", "x", "--until", "2020-01-01"], "in the future"),
        (["add", "--account-id", "7", "--reason", "x", "--until", "next year"], "YYYY-MM-DD"),
        (["add", "--email", "no-address", "--reason", "x"], "not an email address"),
        (["release", "HOLD-NONE"], "no hold HOLD-NONE"),
    ],
)
def test_bad_hold_commands_are_refused_and_change_nothing(ledger, capsys, argv, message):
    code, _, err = dsr(capsys, "hold", *argv)
    assert code != 0
    assert message in err
    assert LegalHolds(ledger).list() == []
