"""The embedded demo's Airflow environment: what every process of ``make demo`` runs with."""

from __future__ import annotations

from include import settings
from include.demo.airflow_env import airflow_environment


def test_the_demo_accepts_its_public_secrets_and_nothing_else_does(monkeypatch, tmp_path) -> None:
    """Tasks refuse the public demo secrets unless DSR_DEMO=1: the demo's processes must have it
    (without it `make demo`'s sample requests failed at validate_request), other environments not."""
    env = airflow_environment(home=tmp_path, base={})
    assert env["DSR_DEMO"] == "1"
    monkeypatch.setenv("DSR_DEMO", env["DSR_DEMO"])
    assert settings.demo_mode()
    monkeypatch.delenv("DSR_DEMO")
    assert not settings.demo_mode()
