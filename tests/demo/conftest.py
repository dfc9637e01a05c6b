"""Shared fixtures of the demo-world tests: a tiny partner SQLite file, the partner
simulators (the moto S3 server is the session's, from ``tests/conftest.py``).

The partner file (``partner_db``) holds three subjects in two tables:

- Alice, ``alice.example@example.com``, stored in three spellings (odd case, spaces):
  ``order_packages`` 1 and 4, ``support_cases`` 2;
- Bob, ``bob@example.com``: ``order_packages`` 2, ``support_cases`` 1; Alice and Bob share
  the company phone ``+4930123456`` (``order_packages`` 1 and 2);
- Carol, ``carol@example.com`` / ``+4940999888``: ``order_packages`` 3, ``support_cases`` 3
  (phone only).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from include.demo.partners.api_server import PartnerApiServer
from include.demo.partners.dropbox_responder import DropboxResponder

TOKEN = "test-token"

PARTNER_ROWS = {
    "order_packages": [
        (1, "  Alice.Example@Example.COM ", "+4930123456", "Alice Example", "Hauptstr. 1, Berlin"),
        (2, "bob@example.com", "+4930123456", "Bob Builder", "Hauptstr. 1, Berlin"),
        (3, "carol@example.com", "+4940999888", "Carol Carver", "Elbchaussee 9, Hamburg"),
        (4, "alice.example@example.com", None, "Alice Example", "Hauptstr. 1, Berlin"),
    ],
    "support_cases": [
        (1, "bob@example.com", None, "broken bracket"),
        (2, "ALICE.EXAMPLE@EXAMPLE.COM", None, "late delivery"),
        (3, None, "+4940999888", "sms: where is my part?"),
    ],
}


@pytest.fixture
def partner_db(tmp_path: Path) -> Path:
    """A partner's SQLite copy following the storage contract (id, email, phone, ...)."""
    path = tmp_path / "acme.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE order_packages (id INTEGER PRIMARY KEY, email TEXT, phone TEXT, "
            "full_name TEXT, shipping_address TEXT)"
        )
        conn.execute("CREATE TABLE support_cases (id INTEGER PRIMARY KEY, email TEXT, phone TEXT, note TEXT)")
        conn.executemany("INSERT INTO order_packages VALUES (?, ?, ?, ?, ?)", PARTNER_ROWS["order_packages"])
        conn.executemany("INSERT INTO support_cases VALUES (?, ?, ?, ?)", PARTNER_ROWS["support_cases"])
    conn.close()
    return path


@pytest.fixture
def api_partner(partner_db: Path) -> Iterator[PartnerApiServer]:
    """A running HTTP partner on 127.0.0.1 and a free port."""
    with PartnerApiServer("acme", partner_db, token=TOKEN) as server:
        yield server


@pytest.fixture
def api(api_partner: PartnerApiServer) -> Iterator[requests.Session]:
    """An HTTP session that sends the partner's bearer token."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


@pytest.fixture
def s3(s3_factory: Callable[[], Any]) -> Any:
    return s3_factory()


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh drop-box bucket per test (the moto server is shared)."""
    name = f"partner-dropbox-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def dropbox(partner_db: Path, bucket: str, s3_factory: Callable[[], Any]) -> DropboxResponder:
    """A drop-box responder, not started: tests drive it with ``poll_once()``."""
    return DropboxResponder("acme", partner_db, bucket, s3_factory, poll_seconds=0.05)
