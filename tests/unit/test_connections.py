"""Database errors raised through the platform engine never quote the subject's identities."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from include.dsr.connections import engine_for_url


def test_errors_hide_bound_identities(tmp_path):
    engine = engine_for_url(f"sqlite:///{tmp_path / 'app.sqlite'}")
    with pytest.raises(OperationalError) as exc_info, engine.connect() as conn:
        conn.execute(text("SELECT * FROM missing_table WHERE email = :email"), {"email": "maria.lopez@example.com"})
    assert "maria.lopez@example.com" not in str(exc_info.value)
    assert "missing_table" in str(exc_info.value)  # the error itself is still readable
