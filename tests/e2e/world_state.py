"""The demo world's state, read directly (not through the product): for before/after comparisons.

Digests cover every row of every table of the platform DB and of each partner's database, and
every version of every object (key, version id, ETag), except what belongs to the people a test
erased: their linkable rows (the generator's ground truth) and their objects.
"""

from __future__ import annotations

import hashlib
import sqlite3
import unicodedata
from collections import defaultdict

import sqlalchemy as sa

from include import constants
from include.demo import app_schema
from include.demo.world import WorldPaths
from include.dsr.core.data_map import load_data_map

PLATFORM = "fabconnect_app"


def owned(paths: WorldPaths, people: set[str], linkable_only: bool = True) -> dict[tuple[str, str], set[str]]:
    """(system, collection) -> row ids (object keys for the object store) of ``people``."""
    truth = sqlite3.connect(paths.ground_truth)
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    marks = ",".join("?" * len(people))
    query = f"SELECT system, collection, row_id FROM owned_rows WHERE person_key IN ({marks})"
    if linkable_only:
        query += " AND linkable = 1"
    for system, collection, row_id in truth.execute(query, sorted(people)):
        found[(system, collection)].add(str(row_id))
    truth.close()
    return found


def platform_digests(app_url: str, skip: dict[tuple[str, str], set[str]], suppressed: set[str]) -> dict[str, str]:
    """Per platform table, a digest of every row but the skipped ones (and new suppression entries)."""
    engine = sa.create_engine(app_url)
    digests = {}
    with engine.connect() as conn:
        for table in app_schema.metadata.sorted_tables:
            rows = conn.execute(sa.select(table).order_by(*table.primary_key.columns)).mappings().all()
            kept = [
                repr(tuple(row.values()))
                for row in rows
                if str(row.get("id")) not in skip.get((PLATFORM, table.name), set())
                and not (table.name == "suppression_list" and row["email_hash"] in suppressed)
            ]
            digests[table.name] = hashlib.sha256("\n".join(kept).encode()).hexdigest()
    engine.dispose()
    return digests


def partner_digests(paths: WorldPaths, skip: dict[tuple[str, str], set[str]]) -> dict[str, str]:
    """Per partner table, a digest of every data row but the skipped ones (``_sim_`` tables excluded)."""
    digests = {}
    for partner in load_data_map().partners():
        db = paths.partner_db(partner.key)
        if not db.exists():
            continue
        conn = sqlite3.connect(db)
        tables = [
            t
            for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
            if not t.startswith(("_sim_", "sqlite_"))
        ]
        for table in tables:
            rows = conn.execute(f'SELECT * FROM "{table}" ORDER BY id').fetchall()
            kept = [repr(r) for r in rows if str(r[0]) not in skip.get((partner.key, table), set())]
            digests[f"{partner.key}.{table}"] = hashlib.sha256("\n".join(kept).encode()).hexdigest()
        conn.close()
    return digests


def object_versions(s3, skip: set[str] = frozenset()) -> set[tuple[str, str, str]]:
    """(key, version id, ETag) of every object version in the platform bucket, but the skipped keys."""
    found = set()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=constants.PLATFORM_BUCKET):
        for item in page.get("Versions", []):
            if item["Key"] not in skip:
                found.add((item["Key"], item["VersionId"], item["ETag"]))
    return found


def versions_of(s3, keys: set[str]) -> int:
    """How many versions and delete markers are left of ``keys``."""
    left = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=constants.PLATFORM_BUCKET):
        for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            left += item["Key"] in keys
    return left


def text_cells_holding(app_url: str, needle: str) -> list[tuple[str, str, str]]:
    """(table, column, row id) of every text cell whose trimmed, NFC, lower-case form contains ``needle``."""
    wanted = unicodedata.normalize("NFC", needle).lower()
    engine = sa.create_engine(app_url)
    found = []
    with engine.connect() as conn:
        for table in app_schema.metadata.sorted_tables:
            text_columns = [c for c in table.columns if isinstance(c.type, sa.String | sa.Text)]
            if not text_columns:
                continue
            for row in conn.execute(sa.select(table)).mappings():
                for column in text_columns:
                    value = row[column.name]
                    if isinstance(value, str) and wanted in unicodedata.normalize("NFC", value).lower():
                        found.append((table.name, column.name, str(row.get("id"))))
    engine.dispose()
    return found
