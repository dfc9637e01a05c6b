"""What the data map says about a package: the Art. 15 report and the Art. 20 JSON Schema.

Everything shown to the subject comes from the data map (descriptions, purposes and
legal bases, data categories, retention, source, recipients, controller statements), so
the report stays true to the map the engine runs on. The report is rendered with Jinja2,
autoescaping on: every value from a system is text, never markup.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.dsr.core.data_map import NOT_PERSONAL

if TYPE_CHECKING:
    import jinja2
    import pandas as pd

    from include.dsr.core.data_map import Collection, DataMap, System

TEMPLATE = "access_report.html.j2"
BASIS = {
    "consent": "Consent",
    "contract": "Performance of a contract",
    "legal_obligation": "Legal obligation",
    "legitimate_interest": "Legitimate interest",
}
SOURCE = {
    "observed": "Observed by Fabconnect from your use of the Services",
    "derived": "Inferred by Fabconnect from other data about you",
    "fabconnect": "Created by Fabconnect (for example, documents we issue to you)",
}
PORTABILITY = {
    "provided": "Provided data: data you gave us (Art. 20 GDPR).",
    "observed": "Observed data: data we recorded from your use of the Services (Art. 20 GDPR).",
}
OBJECT_COLUMNS = {
    "object_key": "Key of the file in Fabconnect's object store",
    "size_bytes": "Size of the file in bytes",
    "sha256": "SHA-256 checksum of the file",
    "package_file": "Path of the copy of the file inside this package",
}
_UNITS = (("Y", "year"), ("M", "month"), ("D", "day"))


def render_access_report(data_map: DataMap, data: dict, frames: dict[str, dict[str, pd.DataFrame]], info: dict) -> str:
    """The Art. 15 report as one self-contained HTML document.

    :param data: ``{system: {collection: [records]}}`` as written to data.json
    :param frames: the same rows as frames (their columns give table headers of empty collections)
    :param info: non-personal request facts (request_id, received_at, due_at, jurisdiction, generated_at)
    """
    sections, not_found, recipients = [], [], []
    for system_key, colls in frames.items():
        system = data_map.system(system_key)
        for name, frame in colls.items():
            coll = system.collection(name)
            if frame.empty:
                not_found.append({"system": system.name, "description": coll.description})
                continue
            sections.append(_section(data_map, system, coll, list(frame.columns), data[system_key][name]))
        if system.family != "internal":
            recipients.append(
                {
                    **system.recipient.model_dump(),
                    "system": system.name,
                    "records": sum(len(frame) for frame in colls.values()),
                }
            )
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            controller=data_map.controller,
            info=info,
            sections=sections,
            not_found=not_found,
            recipients=recipients,
            record_count=sum(s["count"] for s in sections),
        )
    )


def _section(data_map: DataMap, system: System, coll: Collection, columns: list[str], records: list[dict]) -> dict:
    retention = coll.retention
    return {
        "system": system.name,
        "name": coll.name,
        "description": coll.description,
        "count": len(records),
        "purposes": [
            {"description": p.description, "basis": BASIS[p.legal_basis], "detail": p.basis_detail}
            for p in (data_map.purposes[key] for key in coll.purposes)
        ],
        "categories": [data_map.data_categories[c] for c in collection_categories(data_map, coll)],
        "retention": retention
        and {
            "period": human_period(retention.period),
            "trigger": retention.trigger,
            "basis": retention.basis,
            "legal_hold": retention.legal_hold,
        },
        "source": SOURCE.get(coll.source),
        "recipient": system.recipient.legal_name if system.recipient else None,
        "columns": columns,
        "rows": [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in records],
    }


@cache
def _environment() -> jinja2.Environment:
    import jinja2

    # autoescape=True (not select_autoescape): the template's name ends in .j2, not .html
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def collection_categories(data_map: DataMap, coll: Collection) -> list[str]:
    """Personal data categories of a collection; object collections take their key field's categories."""
    fields = list(coll.fields)
    if not fields and coll.object_key_field:
        source, _, field = coll.object_key_field.partition(".")
        fields = [
            c.field(field)
            for s in data_map.systems
            if s.family == "internal"
            for c in s.collections
            if c.name == source and field in c.field_names
        ]
    return list(dict.fromkeys(c for f in fields for c in f.data_categories if c != NOT_PERSONAL))


def human_period(period: str) -> str:
    """``P10Y`` -> ``10 years``; ``P1Y6M`` -> ``1 year, 6 months``."""
    parts = []
    for unit, word in _UNITS:
        match = re.search(rf"(\d+){unit}", period)
        if match:
            n = int(match.group(1))
            parts.append(f"{n} {word}{'' if n == 1 else 's'}")
    return ", ".join(parts) or period


def schema_document(data_map: DataMap, frames: dict[str, dict[str, pd.DataFrame]], data: dict) -> dict:
    """JSON Schema (draft 2020-12) of data.json: system -> collection -> array of records.

    Each property's description names its data categories; each collection says whether it
    is provided or observed data (also as the annotation ``x-portability``).
    """
    systems = {}
    for system_key, colls in frames.items():
        system = data_map.system(system_key)
        collections = {}
        for name, frame in colls.items():
            coll = system.collection(name)
            records = data[system_key][name]
            properties = {
                col: {
                    "description": field_description(data_map, system, coll, col),
                    **_json_types(r.get(col) for r in records),
                }
                for col in frame.columns
            }
            collections[name] = {
                "description": f"{coll.description}. {PORTABILITY.get(coll.portability, '')}".strip(),
                "x-portability": coll.portability,
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": properties,
                    "required": list(frame.columns),
                    "additionalProperties": False,
                },
            }
        holder = f" (held by {system.recipient.legal_name})" if system.recipient else ""
        systems[system_key] = {
            "title": system.name,
            "description": f"Data from {system.name}{holder}",
            "type": "object",
            "properties": collections,
            "required": list(collections),
            "additionalProperties": False,
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"Personal data exported by {data_map.controller.name} (Art. 20 GDPR)",
        "description": "data.json: system -> collection -> list of records. Only data you provided or "
        "that we observed is included; inferred data is not.",
        "type": "object",
        "properties": systems,
        "required": list(systems),
        "additionalProperties": False,
    }


def field_description(data_map: DataMap, system: System, coll: Collection, column: str) -> str:
    if column in coll.field_names:
        return "; ".join(data_map.data_categories[c] for c in coll.field(column).data_categories)
    if column in OBJECT_COLUMNS:
        categories = [data_map.data_categories[c] for c in collection_categories(data_map, coll)]
        return f"{OBJECT_COLUMNS[column]} ({'; '.join(categories) or coll.description})"
    return f"Returned by {system.name}; not described in {data_map.controller.name}'s data map"


def _json_types(values: Any) -> dict:
    """``{"type": [...]}`` from the values present (null always allowed); nothing for an empty collection."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object", list: "array"}
    types = {names.get(type(v), "string") for v in values if v is not None}
    return {"type": sorted(types | {"null"})} if types else {}
