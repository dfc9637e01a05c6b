"""Search every table of a database, and every file under a folder, for a subject's identities.

Used by the leak tests: the Airflow metadata DB (SQLite or PostgreSQL, any table, any column,
JSON and binary blobs decoded leniently) and the task-log folder. Needles are matched
case-insensitively, also in their JSON- and URL-escaped forms.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote


def needle_forms(values: Iterable[str]) -> list[str]:
    """Each value as written, JSON-escaped (``\\u00eb``) and URL-quoted, lower-cased, deduplicated."""
    forms: set[str] = set()
    for value in values:
        if not value:
            continue
        forms |= {value.lower(), json.dumps(value)[1:-1].lower(), quote(value).lower(), quote(value, safe="@").lower()}
    return sorted(forms)


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def scan_database(url: str, values: Iterable[str]) -> dict[str, int]:
    """table -> number of rows holding any of ``values``; every table of the database is read."""
    import sqlalchemy as sa

    needles = needle_forms(values)
    engine = sa.create_engine(url)
    hits: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            for table in sa.inspect(conn).get_table_names():
                count = 0
                for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                    blob = " ".join(_text(v) for v in row if v is not None).lower()
                    count += any(n in blob for n in needles)
                hits[table] = count
    finally:
        engine.dispose()
    return hits


def scan_files(folder: Path, values: Iterable[str]) -> dict[str, int]:
    """relative path -> occurrences of any of ``values``, for every file under ``folder``."""
    needles = needle_forms(values)
    hits: dict[str, int] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        text = path.read_bytes().decode("utf-8", errors="replace").lower()
        hits[str(path.relative_to(folder))] = sum(text.count(n) for n in needles)
    return hits
