"""The dashboard's HTML page: one Jinja2 template (autoescaped), inline CSS and SVG, no script.

Dates are shown as calendar days in the controller's time zone, the calendar the deadlines
are counted in (a deadline is the end of its day there).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from include.dsr.ledger.schema import RIGHTS
from include.dsr.sla import deadlines as sla
from include.dsr.sla.kpis import WINDOWS
from include.dsr.sla.reports import ComplianceReport

from .charts import days_left_chart, volume_chart

TEMPLATES = Path(__file__).parent / "templates"
WINDOW_TITLES = {"1m": "Answered within 1 month", "3m": "Answered within 3 months"}


def _day(moment: datetime) -> str:
    return moment.astimezone(sla.CONTROLLER_TZ).strftime("%Y-%m-%d")


def _percent(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio * 100:.1f} %"


def _days(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} days"


def _label(value: str) -> str:
    return value.replace("_", " ")


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(day=_day, percent=_percent, days=_days, label=_label)
    return env


def render_page(report: ComplianceReport, retention: dict | None = None) -> str:
    """The dashboard page for ``report`` and the last retention run's record (if any)."""
    template = _environment().get_template("dashboard.html.j2")
    return template.render(
        report=report,
        retention=retention,
        rights=[name for name in RIGHTS if any(month.counts.get(name) for month in report.volume)],
        windows=[(WINDOW_TITLES[window], report.shares[window]) for window in WINDOWS],
        days_left_svg=days_left_chart(report.open_requests, report.at_risk_days),
        volume_svg=volume_chart(report.volume),
        timezone=str(sla.CONTROLLER_TZ),
    )
