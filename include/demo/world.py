"""Build the demo world: platform DB, object store, partner copies and ground truth.

Usage::

    python -m include.demo.world build [--subjects N] [--seed S] [--app-url URL]
                                       [--s3-endpoint URL] [--no-objects]

The platform DB goes wherever ``--app-url`` points (SQLite file by default, PostgreSQL
works the same). Partner copies are one SQLite file per partner under
``<demo dir>/partners/`` (the simulators serve them). ``ground_truth.sqlite`` records which
person owns which row and whether exact matching can link it: tests compare DSR results
against it. Rows are written in bulk, in foreign-key order, a few thousand at a time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from include import constants, settings
from include.demo import app_schema
from include.demo.generator import APP, PARTNERS, S3, WorldGenerator
from include.demo.people import generate_people

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

FLUSH_EVERY = 5000  # buffered rows before a bulk insert
UPLOAD_THREADS = 16  # object PUTs are latency-bound: upload them concurrently


def dropbox_bucket(slug: str) -> str:
    """The S3 bucket a ``s3_dropbox`` partner shares with Fabconnect (inbox/ and outbox/)."""
    return f"partner-dropbox-{slug}"


@dataclass
class WorldPaths:
    root: Path
    app_url: str = ""
    partners_dir: Path = field(init=False)
    ground_truth: Path = field(init=False)
    manifest: Path = field(init=False)

    def __post_init__(self) -> None:
        self.partners_dir = self.root / "partners"
        self.ground_truth = self.root / "ground_truth.sqlite"
        self.manifest = self.root / "world.json"
        self.app_url = self.app_url or f"sqlite:///{self.root / 'app.sqlite'}"

    def partner_db(self, slug: str) -> Path:
        return self.partners_dir / f"{slug}.sqlite"


class _PartnerFiles:
    """One SQLite file per partner; tables created from the first row's columns."""

    def __init__(self, paths: WorldPaths) -> None:
        paths.partners_dir.mkdir(parents=True, exist_ok=True)
        self.conns: dict[str, sqlite3.Connection] = {}
        for partner in PARTNERS:
            db = paths.partner_db(partner.slug)
            db.unlink(missing_ok=True)
            self.conns[partner.slug] = sqlite3.connect(db)
        self.created: set[tuple[str, str]] = set()

    def insert(self, slug: str, table: str, rows: list[dict]) -> None:
        conn = self.conns[slug]
        cols = list(rows[0])
        if (slug, table) not in self.created:
            col_sql = ", ".join("id INTEGER PRIMARY KEY" if c == "id" else f'"{c}" TEXT' for c in cols)
            conn.execute(f'CREATE TABLE "{table}" ({col_sql})')
            conn.execute(f'CREATE INDEX "ix_{table}_email" ON "{table}" (lower(trim(email)))')
            conn.execute(f'CREATE INDEX "ix_{table}_phone" ON "{table}" (phone)')
            self.created.add((slug, table))
        marks = ", ".join("?" for _ in cols)
        conn.executemany(
            f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({marks})',
            [tuple(None if r[c] is None else str(r[c]) for c in cols) for r in rows],
        )

    def close(self) -> None:
        for conn in self.conns.values():
            conn.commit()
            conn.close()


class _GroundTruth:
    def __init__(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.conn = sqlite3.connect(path)
        self.conn.executescript("""
            CREATE TABLE people (person_key TEXT PRIMARY KEY, kind TEXT, hard_case TEXT,
                                 email TEXT, phone TEXT, full_name TEXT);
            CREATE TABLE owned_rows (person_key TEXT, system TEXT, collection TEXT,
                                     row_id TEXT, linkable INTEGER);
        """)

    def add_people(self, people) -> None:
        self.conn.executemany(
            "INSERT INTO people VALUES (?, ?, ?, ?, ?, ?)",
            [(p.key, p.kind, p.hard_case, p.email, p.phone, p.full_name) for p in people],
        )

    def add_rows(self, facts: list[tuple]) -> None:
        self.conn.executemany("INSERT INTO owned_rows VALUES (?, ?, ?, ?, ?)", facts)

    def close(self) -> None:
        self.conn.execute("CREATE INDEX ix_owned_person ON owned_rows (person_key)")
        self.conn.commit()
        self.conn.close()


class WorldWriter:
    """The ``WorldSink`` that writes everything in bulk."""

    def __init__(self, paths: WorldPaths, engine: Engine, s3_client=None) -> None:
        self.engine = engine
        self.s3 = s3_client
        self.partners = _PartnerFiles(paths)
        self.truth = _GroundTruth(paths.ground_truth)
        self.app_rows: dict[str, list[dict]] = defaultdict(list)
        self.partner_rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
        self.facts: list[tuple] = []
        self.objects: list[tuple[str, bytes]] = []
        self.buffered = 0
        self.counts: dict[str, int] = defaultdict(int)

    def add_row(self, target: str, table: str, row: dict, owner: str | None, linkable: bool = True) -> None:
        if target == APP:
            self.app_rows[table].append(row)
        else:
            self.partner_rows[(target, table)].append(row)
        self.counts[f"{target}.{table}"] += 1
        if owner:
            self.facts.append((owner, target, table, str(row["id"]), int(linkable)))
        self.buffered += 1
        if self.buffered >= FLUSH_EVERY:
            self.flush()

    def add_object(self, key: str, body: bytes, owner: str) -> None:
        self.counts[f"{S3}.objects"] += 1
        collection = key.split("/", 1)[0]
        self.facts.append((owner, S3, collection, key, 1))
        if self.s3 is not None:
            self.objects.append((key, body))
            self.buffered += 1

    def flush(self) -> None:
        with self.engine.begin() as conn:
            for table in app_schema.metadata.sorted_tables:  # parents before children
                rows = self.app_rows.pop(table.name, None)
                if rows:
                    conn.execute(table.insert(), rows)
        for (slug, table), rows in self.partner_rows.items():
            self.partners.insert(slug, table, rows)
        self.partner_rows.clear()
        self.truth.add_rows(self.facts)
        self.facts = []
        self._upload_objects()
        self.buffered = 0

    def _upload_objects(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        def put(item: tuple[str, bytes]) -> None:
            key, body = item
            if _is_revised(key):  # an earlier draft stays in the versioned bucket: erasure must find it
                self.s3.put_object(Bucket=constants.PLATFORM_BUCKET, Key=key, Body=b"draft of " + body[:64])
            self.s3.put_object(Bucket=constants.PLATFORM_BUCKET, Key=key, Body=body)

        if self.objects:
            with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
                list(pool.map(put, self.objects))
        self.objects = []

    def close(self) -> None:
        self.flush()
        self.partners.close()
        self.truth.close()


def _fresh_schema(engine: Engine) -> None:
    app_schema.metadata.drop_all(engine)
    app_schema.metadata.create_all(engine)


def _advance_sequences(engine: Engine) -> None:
    """Rows were written with explicit ids: move PostgreSQL's id sequences past them, so the
    platform's own inserts (a suppression entry, a new ticket) get fresh ids."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        for table in app_schema.metadata.sorted_tables:
            if "id" not in table.c:
                continue
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # our own table names
                f"COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false) "
                f"WHERE pg_get_serial_sequence('{table.name}', 'id') IS NOT NULL"
            )


def _is_revised(key: str) -> bool:
    """About one specification in five was uploaded twice (a draft, then the final file)."""
    return key.startswith("specs/") and hashlib.sha256(key.encode()).digest()[0] < 52


def _fresh_buckets(s3) -> None:
    """Empty buckets (every version); the platform bucket is versioned, as uploads usually are."""
    buckets = [constants.PLATFORM_BUCKET, constants.EXPORTS_BUCKET]
    buckets += [dropbox_bucket(p.slug) for p in PARTNERS if p.channel == constants.CHANNEL_S3_DROPBOX]
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in buckets:
        if bucket in existing:
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                items = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                keys = [{"Key": o["Key"], "VersionId": o["VersionId"]} for o in items]
                if keys:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        else:
            s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=constants.PLATFORM_BUCKET, VersioningConfiguration={"Status": "Enabled"})


def build_world(paths: WorldPaths, subjects: int, seed: int, s3_client=None, progress: bool = False) -> dict:
    """Build the whole world; returns (and writes) the manifest with per-table counts.

    :param s3_client: boto3 S3 client; ``None`` skips objects (benchmark worlds)
    :param progress: show a progress bar (large worlds)
    """
    from sqlalchemy import create_engine

    started = time.monotonic()
    paths.root.mkdir(parents=True, exist_ok=True)
    engine = create_engine(paths.app_url)
    _fresh_schema(engine)
    if s3_client is not None:
        _fresh_buckets(s3_client)
    people = generate_people(subjects, seed)
    writer = WorldWriter(paths, engine, s3_client)
    writer.truth.add_people(people)
    generator = WorldGenerator(writer, seed, settings.DEMO_ERASURE_HASH_SECRET)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(people), desc="people", unit="person", mininterval=0.5)
    generator.run(people, on_person=bar.update if bar else None)
    if bar:
        bar.close()
    writer.close()
    _advance_sequences(engine)
    engine.dispose()
    manifest = {
        "seed": seed,
        "subjects": subjects,
        "people": len(people),
        "app_url": engine.url.render_as_string(hide_password=True),
        "objects_uploaded": s3_client is not None,
        "counts": dict(sorted(writer.counts.items())),
        "build_seconds": round(time.monotonic() - started, 2),
    }
    paths.manifest.write_text(json.dumps(manifest, indent=2))
    return manifest


def s3_client_for(endpoint_url: str):
    """A boto3 S3 client for the local S3-compatible server (any credentials work there).

    CRCs are checked only on request, as by the demo's ``fabconnect_s3`` connection: moto stores a
    wrong one for a single-request copy of a multipart upload (the product checks SHA-256 itself).
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="demo",
        aws_secret_access_key="demo",
        config=Config(max_pool_connections=UPLOAD_THREADS, response_checksum_validation="when_required"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="(re)build the demo world")
    build.add_argument("--subjects", type=int, default=settings.DEMO_SUBJECTS)
    build.add_argument("--seed", type=int, default=settings.DEMO_SEED)
    build.add_argument("--dir", type=Path, default=settings.DEMO_DIR)
    build.add_argument("--app-url", default="", help="SQLAlchemy URL of the platform DB (default: SQLite in --dir)")
    build.add_argument("--s3-endpoint", default=f"http://127.0.0.1:{settings.S3_PORT}")
    build.add_argument("--no-objects", action="store_true", help="skip object-store files (benchmark worlds)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    paths = WorldPaths(args.dir, args.app_url)
    s3 = None if args.no_objects else s3_client_for(args.s3_endpoint)
    manifest = build_world(paths, args.subjects, args.seed, s3, progress=args.subjects >= 20000)
    total = sum(manifest["counts"].values())
    log.info(
        "demo world built: %s people, %s rows/objects in %ss (%s)",
        manifest["people"],
        total,
        manifest["build_seconds"],
        paths.root,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
