"""Gather time for one data subject in a ~10k-row vs a 1M+-row platform DB (PostgreSQL).

Measures, for hard cases H01 (email written with other case/spaces elsewhere) and H08 (email
with SQL metacharacters), each with email and phone (free-text phone columns looked up by their
digits key), ``IdentityResolver.resolve`` alone, ``SqlDatabaseConnector.export``
alone and both (one gather), ``--repeat`` times after 2 warm-ups: median and p95 in ms. EXPLAINs
the accounts email lookup and two export queries to show the indexes that keep gather time flat
while the DB grows ~100x. Prints a table and the large/small ratios, writes
``bench/results/gather.json``; exits non-zero only on errors, never on slowness.

Each size lives in its own schema (``bench_small``/``bench_large``) and is reused on re-runs
when ``bench_meta`` says it was built for the same subjects and seed (``--rebuild`` forces).
A world of N subjects holds ~13.7 platform rows per subject; the large build takes ~1-2 min.

Run (from the project root)::

    .venv/bin/python bench/bench_gather.py [--postgres-url URL] [--small 720] [--large 75000]
                                           [--repeat 20] [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import column, create_engine, select, table, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from include import settings  # noqa: E402
from include.demo import app_schema  # noqa: E402
from include.demo.people import hard_case_people  # noqa: E402
from include.demo.world import WorldPaths, build_world  # noqa: E402
from include.dsr.connectors.sql_database import SqlDatabaseConnector  # noqa: E402
from include.dsr.core.data_map import load_data_map  # noqa: E402
from include.dsr.core.identities import normalize_email, normalize_phone  # noqa: E402
from include.dsr.identity.matching import link_columns, where_any  # noqa: E402
from include.dsr.identity.resolver import IdentityResolver, SubjectQuery  # noqa: E402

DEFAULT_URL = os.environ.get("DSR_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
RESULTS = ROOT / "bench" / "results"
CASES = ("H01", "H08")
INDEX_NODE = r"((?:Bitmap )?Index (?:Only )?Scan (?:using|on) \w+)"
WARMUP = 2


def platform_rows(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(text(f'SELECT count(*) FROM "{t.name}"')).scalar_one()
            for t in app_schema.metadata.sorted_tables
        }


def ensure_world(base_url: str, schema: str, subjects: int, rebuild: bool) -> tuple[str, dict]:
    """The schema's URL and its facts (row counts, build time); builds unless reusable."""
    seed = settings.DEMO_SEED
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    admin = create_engine(base_url)
    with admin.begin() as conn:
        meta = None
        if not rebuild and conn.execute(text(f"SELECT to_regclass('{schema}.bench_meta')")).scalar():
            meta = conn.execute(
                text(f"SELECT subjects, seed, accounts, build_seconds FROM {schema}.bench_meta")
            ).first()
        reuse = bool(
            meta
            and meta.subjects == subjects
            and meta.seed == seed
            and meta.accounts == conn.execute(text(f"SELECT count(*) FROM {schema}.accounts")).scalar_one()
        )
        if not reuse:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))
    admin.dispose()
    engine = create_engine(url)
    if reuse:
        build_s = meta.build_seconds
        print(f"[{schema}] reusing world of {subjects} subjects (built in {build_s:.1f}s)")
    else:
        print(f"[{schema}] building world of {subjects} subjects ...", flush=True)
        started = time.perf_counter()
        build_world(
            WorldPaths(RESULTS / f"world_{schema}", app_url=url), subjects, seed, None, progress=subjects >= 20000
        )
        with engine.begin() as conn:  # fresh planner statistics, as autovacuum would give a live DB
            for t in app_schema.metadata.sorted_tables:
                conn.execute(text(f'ANALYZE "{t.name}"'))
        build_s = time.perf_counter() - started
    rows = platform_rows(engine)
    if not reuse:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TABLE bench_meta (subjects int, seed bigint, accounts int, "
                    "build_seconds double precision, built_at timestamptz DEFAULT now())"
                )
            )
            conn.execute(
                text("INSERT INTO bench_meta VALUES (:s, :seed, :a, :b)"),
                {"s": subjects, "seed": seed, "a": rows["accounts"], "b": build_s},
            )
        print(
            f"[{schema}] built {sum(rows.values())} platform rows in {build_s:.1f}s "
            f"({sum(rows.values()) / build_s:.0f} rows/s)"
        )
    engine.dispose()
    return url, {
        "schema": schema,
        "subjects": subjects,
        "platform_rows": sum(rows.values()),
        "build_seconds": round(build_s, 1),
        "reused": reuse,
        "table_rows": rows,
    }


def timed(fn, repeat: int) -> dict:
    for _ in range(WARMUP):
        fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[math.ceil(0.95 * len(samples)) - 1], 2),
    }


def explain(engine, connector: SqlDatabaseConnector, resolved) -> dict[str, list[str]]:
    """Index nodes Postgres plans for the account lookups and export queries the engine issues ([] = none)."""
    wanted = connector._wanted([resolved])
    queries = {}
    for name in ("accounts", "support_tickets", "web_logs", "chatbot_transcripts", "sms_messages"):
        coll = connector.system.collection(name)
        t = table(name, *(column(f) for f in coll.field_names))
        links = link_columns(coll)
        queries[f"{name} lookup"] = select(t).where(where_any(t, links, wanted))
    found = {}
    with engine.connect() as conn:
        for label, stmt in queries.items():
            sql = str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
            found[label] = re.findall(INDEX_NODE, plan) + (["Seq Scan"] if "Seq Scan" in plan else [])
    return found


def bench_size(label: str, url: str, repeat: int) -> dict:
    engine = create_engine(url)
    data_map = load_data_map()
    resolver = IdentityResolver(engine, data_map, settings.DEMO_ERASURE_HASH_SECRET)
    connector = SqlDatabaseConnector(data_map.system("fabconnect_app"), engine=engine)
    people = {p.key: p for p in hard_case_people()}
    out, first = {}, None
    for case in CASES:
        query = SubjectQuery(
            f"bench-{case}", email=normalize_email(people[case].email), phone=normalize_phone(people[case].phone)
        )
        [resolved] = resolver.resolve([query])
        first = first or resolved
        result = connector.export([resolved])
        accounts, exported = result.frames["accounts"], sum(result.counts().values())
        if not resolved.account_ids or exported == 0 or accounts.empty:
            raise SystemExit(f"[{label}] {case}: nothing gathered, the world is broken")
        if {normalize_email(e) for e in accounts["email"]} != {query.email}:
            raise SystemExit(f"[{label}] {case}: an exported accounts row has another email")
        out[case] = {
            "exported_rows": exported,
            "resolve": timed(lambda q=query: resolver.resolve([q]), repeat),
            "export": timed(lambda r=resolved: connector.export([r]), repeat),
            "gather": timed(lambda q=query: connector.export(resolver.resolve([q])), repeat),
        }
    out["explain"] = explain(engine, connector, first)  # plans do not depend on the case
    engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres-url", default=DEFAULT_URL)
    parser.add_argument("--small", type=int, default=720, help="subjects of the small world (~10k rows)")
    parser.add_argument("--large", type=int, default=75000, help="subjects of the large world (>=1M rows)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rebuild", action="store_true", help="drop and rebuild both worlds")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"repeat": args.repeat, "warmup": WARMUP, "sizes": {}}
    for label, schema, subjects in (("small", "bench_small", args.small), ("large", "bench_large", args.large)):
        url, facts = ensure_world(args.postgres_url, schema, subjects, args.rebuild)
        report["sizes"][label] = {**facts, **bench_size(label, url, args.repeat)}
    small, large = report["sizes"]["small"], report["sizes"]["large"]
    print(
        f"\n{'size':<6}{'rows':>10}  {'case':<5}{'rows out':>9}  {'resolve med/p95':>16}  "
        f"{'export med/p95':>16}  {'gather med/p95':>16}   (ms)"
    )
    for label, size in report["sizes"].items():
        for case in CASES:
            r = size[case]
            cells = "  ".join(
                f"{r[k]['median_ms']:>7.2f}/{r[k]['p95_ms']:<8.2f}" for k in ("resolve", "export", "gather")
            )
            print(f"{label:<6}{size['platform_rows']:>10}  {case:<5}{r['exported_rows']:>9}  {cells}")
    ratios = report["ratios"] = {
        "large/small rows": round(large["platform_rows"] / small["platform_rows"], 1),
        **{
            f"large/small median gather time {c}": round(
                large[c]["gather"]["median_ms"] / small[c]["gather"]["median_ms"], 2
            )
            for c in CASES
        },
    }
    print()
    for name, value in ratios.items():
        print(f"{name:<40}{value:>8}")
    print("\nEXPLAIN plan nodes (large world; index used = any 'Index' node):")
    for query, nodes in large["explain"].items():
        used = "index used" if any("Index" in n for n in nodes) else "NO INDEX"
        print(f"  {query:<32}{used:<11} {'; '.join(nodes)}  (small: {'; '.join(small['explain'][query])})")
    (RESULTS / "gather.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten {RESULTS.relative_to(ROOT) / 'gather.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
