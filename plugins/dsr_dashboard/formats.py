"""The dashboard's figures as JSON-ready dicts, CSV and Prometheus text exposition format.

Every value is an id, a right, a status, a date or a count: no personal data.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from include.dsr.sla.kpis import WINDOWS
from include.dsr.sla.reports import ComplianceReport, OpenRequest, iso

#: Fields of an open request in the JSON routes and columns of ``open.csv``, in order;
#: ``partners_owed`` is ``;``-separated in the CSV.
CSV_COLUMNS = (
    "request_id",
    "right",
    "jurisdiction",
    "ledger_status",
    "received_at",
    "due_at",
    "extended",
    "paused",
    "days_left",
    "status",
    "partners_owed",
)
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def open_request_dict(row: OpenRequest) -> dict[str, Any]:
    """One open request as a JSON object: the :data:`CSV_COLUMNS` of ``row.as_json()``."""
    values = row.as_json()
    return {column: values[column] for column in CSV_COLUMNS}


def summary_dict(report: ComplianceReport) -> dict[str, Any]:
    """Every figure of the page: counts, the breached and at-risk lists, KPIs, volume."""
    return {
        "generated_at": iso(report.generated_at),
        "at_risk_days": report.at_risk_days,
        "open": {
            "total": len(report.open_requests),
            "breached": len(report.breached),
            "at_risk": len(report.at_risk),
            "on_track": len(report.on_track),
        },
        "breached": [open_request_dict(row) for row in report.breached],
        "at_risk": [open_request_dict(row) for row in report.at_risk],
        "answered": report.answered,
        "closed_by_status": report.closed_by_status,
        "closed_by_outcome": report.closed_by_outcome,
        "answered_within": {window: report.shares[window].as_json() for window in WINDOWS},
        "median_days_to_close": report.median_days_to_close,
        "volume": [{"month": month.month, "counts": month.counts, "total": month.total} for month in report.volume],
    }


def open_csv(rows: Iterable[OpenRequest]) -> str:
    """Open requests as CSV with a header row (``CSV_COLUMNS``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = open_request_dict(row)
        values["partners_owed"] = ";".join(row.partners_owed)
        values["extended"] = "true" if row.extended else "false"
        values["paused"] = "true" if row.paused else "false"
        writer.writerow(values[column] for column in CSV_COLUMNS)
    return buffer.getvalue()


def _sample(name: str, value: float | int, **labels: str) -> str:
    rendered = ",".join(f'{key}="{_escape_label(val)}"' for key, val in labels.items())
    return f"{name}{{{rendered}}} {value}" if labels else f"{name} {value}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, help_text: str, samples: list[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples]


def prometheus_text(report: ComplianceReport) -> str:
    """The figures as Prometheus gauges; a family without a defined value has no sample."""
    lines: list[str] = []
    lines += _family(
        "dsr_open_requests",
        "Open data-subject requests by right and SLA status.",
        [
            _sample("dsr_open_requests", n, right=right, status=status)
            for (right, status), n in report.open_counts().items()
        ],
    )
    shares = [report.shares[window] for window in WINDOWS]
    lines += _family(
        "dsr_answered_within_ratio",
        "Share of eligible requests answered within the window (1m: first deadline, 3m: received + 3 months).",
        [_sample("dsr_answered_within_ratio", s.ratio, window=s.window) for s in shares if s.ratio is not None],
    )
    lines += _family(
        "dsr_answered_in_time_requests",
        "Requests answered within the window.",
        [_sample("dsr_answered_in_time_requests", s.answered_in_time, window=s.window) for s in shares],
    )
    lines += _family(
        "dsr_eligible_requests",
        "Requests answered, or past the window unanswered (the ratio's denominator).",
        [_sample("dsr_eligible_requests", s.eligible, window=s.window) for s in shares],
    )
    median = report.median_days_to_close
    lines += _family(
        "dsr_time_to_close_days_median",
        "Median days from received to answered (completed or refused).",
        [] if median is None else [_sample("dsr_time_to_close_days_median", median)],
    )
    lines += _family(
        "dsr_answered_requests",
        "Requests answered (completed or refused).",
        [_sample("dsr_answered_requests", report.answered)],
    )
    return "\n".join(lines) + "\n"
