"""Text output of the ``dsr`` CLI: times in the controller's zone, aligned tables, JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from include.dsr.core.calendar import CONTROLLER_TZ

EMPTY = "-"


def when(moment: datetime | None) -> str:
    """``2026-12-28 23:59 CET``: a moment in the controller's time zone (deadlines are local days)."""
    if moment is None:
        return EMPTY
    return moment.astimezone(CONTROLLER_TZ).strftime("%Y-%m-%d %H:%M %Z")


def day(moment: datetime | None) -> str:
    """``2026-12-28``: the controller-local calendar day of a moment."""
    if moment is None:
        return EMPTY
    return moment.astimezone(CONTROLLER_TZ).date().isoformat()


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC for machine output, or None."""
    return moment.isoformat() if moment is not None else None


def cell(value: Any) -> str:
    """A table cell: ``-`` for None, one line, at most 60 characters."""
    if value is None or value == "":
        return EMPTY
    text = " ".join(str(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, with an upper-case header line."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """``label   value`` lines with the values aligned."""
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label.ljust(width)}  {EMPTY if value is None else value}" for label, value in pairs)


def _default(value: object) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"type {type(value).__name__} is not JSON-serialisable")


def to_json(value: Any) -> str:
    """Indented JSON; datetimes as ISO-8601."""
    return json.dumps(value, indent=2, sort_keys=False, default=_default)
