"""Inline SVG charts of the dashboard, rendered on the server (no JavaScript, no CDN).

Colours are CSS classes (``rt-<right>``, ``st-<status>``) defined by the page, so the
charts follow its light and dark themes. Every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from html import escape

from markupsafe import Markup

from include.dsr.ledger.schema import RIGHTS
from include.dsr.sla.reports import MonthlyVolume, OpenRequest

#: Open requests drawn in the days-left chart (the most urgent ones); the table lists all.
DAYS_LEFT_MAX_BARS = 30
_FONT = 'font-family="inherit" font-size="11"'


def _nice_max(value: int) -> int:
    """A round axis maximum at or above ``value`` (1, 2, 5 x 10^n), at least 1."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 5, 10) if step * magnitude >= value)


def _month_label(month: str, first_shown: bool) -> str:
    """``Jan 2026`` for January and the first month shown, else ``Feb``."""
    first = date.fromisoformat(f"{month}-01")
    return first.strftime("%b %Y") if first.month == 1 or first_shown else first.strftime("%b")


def volume_chart(volume: Sequence[MonthlyVolume], width: int = 720, height: int = 240) -> Markup:
    """Stacked bars: requests received per month, one colour per right, with a legend."""
    left, right, top, bottom = 36, 8, 20, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = _nice_max(max((month.total for month in volume), default=0))
    slot = plot_w / max(len(volume), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Requests received per month, by right" xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in sorted({0, y_max // 2, y_max}):
        y = top + plot_h - plot_h * tick / y_max
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{tick}</text>')
    for index, month in enumerate(volume):
        x = left + index * slot + slot * 0.15
        y = top + plot_h
        for right_name in RIGHTS:
            count = month.counts.get(right_name, 0)
            if not count:
                continue
            bar_h = plot_h * count / y_max
            y -= bar_h
            title = escape(f"{month.month}: {count} {right_name}")
            parts.append(
                f'<rect class="rt-{escape(right_name)}" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                f'height="{bar_h:.1f}"><title>{title}</title></rect>'
            )
        if month.total:
            parts.append(
                f'<text class="value" x="{x + slot * 0.35:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                f"{_FONT}>{month.total}</text>"
            )
        parts.append(
            f'<text class="axis" x="{x + slot * 0.35:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
            f"{_FONT}>{escape(_month_label(month.month, index == 0))}</text>"
        )
    used = [name for name in RIGHTS if any(month.counts.get(name) for month in volume)]
    for index, name in enumerate(used):
        x = left + index * 120
        parts.append(f'<rect class="rt-{escape(name)}" x="{x}" y="{height - 14}" width="10" height="10" rx="2"/>')
        parts.append(f'<text class="axis" x="{x + 14}" y="{height - 5}" {_FONT}>{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value in parts went through escape() above


def days_left_chart(rows: Sequence[OpenRequest], at_risk_days: int, width: int = 720) -> Markup:
    """One horizontal bar per open request (most urgent first): days left to the deadline in
    force, coloured by SLA status, with the zero line and the at-risk threshold."""
    shown = list(rows[:DAYS_LEFT_MAX_BARS])
    label_w, right, top, row_h = 150, 48, 22, 22
    height = top + row_h * max(len(shown), 1) + 8
    low = min([0, *(row.days_left for row in shown)])
    high = max([at_risk_days, *(row.days_left for row in shown)])
    plot_w = width - label_w - right
    scale = plot_w / max(high - low, 1)

    def x_of(days: int) -> float:
        return label_w + (days - low) * scale

    zero, threshold = x_of(0), x_of(at_risk_days)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Days left per open request" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="threshold" x1="{threshold:.1f}" x2="{threshold:.1f}" y1="{top - 6}" y2="{height - 4}"/>',
        f'<text class="axis" x="{threshold + 4:.1f}" y="{top - 9}" {_FONT}>at risk below {at_risk_days} d</text>',
        f'<text class="axis" x="{zero - 4:.1f}" y="{top - 9}" text-anchor="end" {_FONT}>deadline</text>',
    ]
    if not shown:
        parts.append(f'<text class="axis" x="{label_w}" y="{top + 14}" {_FONT}>No open requests.</text>')
    for index, row in enumerate(shown):
        y = top + index * row_h
        start, end = sorted((zero, x_of(row.days_left)))
        request_id = escape(row.request_id if len(row.request_id) <= 22 else row.request_id[:21] + "…")
        parts.append(
            f'<text class="label" x="{label_w - 8}" y="{y + 15}" text-anchor="end" {_FONT}>{request_id}</text>'
        )
        parts.append(
            f'<rect class="st-{escape(row.status)}" x="{start:.1f}" y="{y + 4}" width="{max(end - start, 2):.1f}" '
            f'height="{row_h - 8}" rx="2"><title>{escape(row.request_id)}: {row.days_left} days left '
            f"({escape(row.status.replace('_', ' '))})</title></rect>"
        )
        # Overdue bars grow left of the deadline line: their value goes right of it.
        x_text = end + 4 if row.days_left >= 0 else zero + 4
        parts.append(f'<text class="value" x="{x_text:.1f}" y="{y + 15}" {_FONT}>{row.days_left} d</text>')
    parts.append(f'<line class="zero" x1="{zero:.1f}" x2="{zero:.1f}" y1="{top - 6}" y2="{height - 4}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value in parts went through escape() above
