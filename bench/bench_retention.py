"""Retention purge of millions of expired web-log rows on PostgreSQL: the product's chunked run
vs one raw ``DELETE`` of the same rows, and the longest lock either holds.

Both runs start from the same table (``--rows`` expired web-log rows plus 5 % recent ones that
must stay, built server-side with ``generate_series``), vacuumed. The product's run is
:class:`include.dsr.retention.purge.CollectionPurge` with the data map's ``web_logs`` rule, as the
DAG runs it (key-range batches of ``--batch``, one transaction each). The raw run is a single
``DELETE ... WHERE requested_at < cutoff``.

Locks are measured from the server: a sampler polls ``pg_locks`` joined with
``pg_stat_activity`` every 20 ms for the row-exclusive lock on the table, and takes the age of
the holding transaction (``now() - xact_start``); the longest age seen is the longest lock.
The client also times every batch transaction. Output: a table, the ratios, and
``bench/results/retention.json``.

    .venv/bin/python bench/bench_retention.py [--postgres-url URL] [--rows 5000000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

DEFAULT_URL = os.environ.get("DSR_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


class LockSampler(threading.Thread):
    """Polls the server for the age of the transaction holding a row-exclusive lock on ``table``."""

    def __init__(self, url: str, schema: str, table: str, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.engine = sa.create_engine(url)
        self.query = sa.text(
            "SELECT max(extract(epoch FROM clock_timestamp() - a.xact_start)) FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.relation = to_regclass(:name) AND l.mode = 'RowExclusiveLock' AND l.granted"
        )
        self.name, self.every = f'"{schema}".{table}', every
        self.longest, self.samples = 0.0, 0
        self._halt = threading.Event()

    def run(self) -> None:
        # autocommit: pg_stat_activity is a snapshot per transaction; a long one would see nobody
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while not self._halt.wait(self.every):
                age = conn.execute(self.query, {"name": self.name}).scalar()
                self.samples += 1
                if age is not None:
                    self.longest = max(self.longest, float(age))

    def stop(self) -> tuple[float, int]:
        self._halt.set()
        self.join()
        self.engine.dispose()
        return self.longest, self.samples


def fill(engine: sa.Engine, rows: int) -> tuple[int, int]:
    """A fresh web_logs table: ``rows`` expired rows, 5 % more recent ones; returns both counts."""
    from include.demo import app_schema

    recent = rows // 20
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS web_logs")
        app_schema.manufacturing_partners.create(conn, checkfirst=True)
        app_schema.accounts.create(conn, checkfirst=True)  # web_logs.account_id references it
        app_schema.web_logs.create(conn)
        conn.exec_driver_sql(
            "INSERT INTO web_logs (id, account_id, ip_address, user_agent, path, requested_at) "
            "SELECT g, NULL, '10.0.' || mod(g, 250) || '.' || mod(g, 200), 'Mozilla/5.0 (bench)', '/quotes/' || g, "
            f"timestamp '2026-06-01' - mod(g, 86400) * interval '1 second' FROM generate_series(1, {rows}) g"
        )
        conn.exec_driver_sql(
            "INSERT INTO web_logs (id, account_id, ip_address, user_agent, path, requested_at) "
            "SELECT g, NULL, '10.1.0.1', 'Mozilla/5.0 (bench)', '/recent', timestamp '2026-11-30' "
            f"FROM generate_series({rows + 1}, {rows + recent}) g"
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE web_logs")
    return rows, recent


def left(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM web_logs").scalar_one()


def product_run(engine: sa.Engine, batch: int) -> dict:
    """The run's code path for one collection, with every batch transaction timed."""
    from include import settings
    from include.dsr.core.data_map import load_data_map
    from include.dsr.retention.purge import CollectionPurge, Exclusions
    from include.dsr.retention.rules import platform_rules

    data_map = load_data_map()
    rule = next(r for r in platform_rules(data_map)[0] if r.collection == "web_logs")
    purge = CollectionPurge(
        engine, data_map, rule, rule.cutoff(NOW), Exclusions(), settings.DEMO_ERASURE_HASH_SECRET, batch
    )
    timings: list[float] = []
    original = engine.begin

    def timed_begin(*args, **kwargs):  # every batch is one engine.begin() block
        from contextlib import contextmanager

        @contextmanager
        def block():
            started = time.perf_counter()
            with original(*args, **kwargs) as conn:
                yield conn
            timings.append(time.perf_counter() - started)

        return block()

    engine.begin = timed_begin  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        out = purge.run()
        wall = time.perf_counter() - started
    finally:
        engine.begin = original  # type: ignore[method-assign]
    return {"wall": wall, "deleted": out.deleted, "batches": out.batches, "longest_batch": max(timings, default=0.0)}


def raw_delete(engine: sa.Engine) -> dict:
    from include.dsr.retention.rules import minus_period

    cutoff = minus_period(NOW, "P90D").replace(tzinfo=None)
    started = time.perf_counter()
    with engine.begin() as conn:
        deleted = conn.execute(sa.text("DELETE FROM web_logs WHERE requested_at < :c"), {"c": cutoff}).rowcount
    return {"wall": time.perf_counter() - started, "deleted": deleted}


def measured(url: str, schema: str, call) -> dict:
    sampler = LockSampler(url, schema, "web_logs")
    sampler.start()
    time.sleep(0.1)
    try:
        result = call()
    finally:
        longest, samples = sampler.stop()
    return {**result, "longest_lock_sampled": longest, "lock_samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default=DEFAULT_URL)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--batch", default="5000", help="keys per batch; several, comma-separated, run one by one")
    args = parser.parse_args()
    schema = f"bench_retention_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(args.postgres_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.make_url(args.postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = sa.create_engine(url)
    try:
        products = {}
        for size in (int(b) for b in args.batch.split(",")):
            expired, recent = fill(engine, args.rows)
            print(f"table: {expired:,} expired + {recent:,} recent web-log rows; batch {size:,}", flush=True)
            products[size] = measured(args.postgres_url, schema, lambda size=size: product_run(engine, size))
            if products[size]["deleted"] != expired or left(engine) != recent:
                raise SystemExit("the product's run removed the wrong rows")
        fill(engine, args.rows)
        raw = measured(args.postgres_url, schema, lambda: raw_delete(engine))
        if raw["deleted"] != expired or left(engine) != recent:
            raise SystemExit("the raw DELETE removed the wrong rows")
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
    raw_rate = raw["deleted"] / raw["wall"]
    header = ("run", "rows/s", "wall s", "batches", "longest lock s", "longest batch s", "ratio")
    widths = (16, 12, 9, 9, 16, 17, 7)
    print(
        "\n"
        + "".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(header, widths, strict=True)))
    )
    results = {}
    for size, product in products.items():
        rate = product["deleted"] / product["wall"]
        results[size] = {**product, "ratio": rate / raw_rate}
        lock, batch = product["longest_lock_sampled"], product["longest_batch"]
        print(
            f"{f'product {size:,}':<16}{rate:>12,.0f}{product['wall']:>9.1f}{product['batches']:>9}"
            f"{lock:>16.3f}{batch:>17.3f}{rate / raw_rate:>7.2f}"
        )
    print(f"{'raw DELETE':<16}{raw_rate:>12,.0f}{raw['wall']:>9.1f}{1:>9}{raw['longest_lock_sampled']:>16.3f}")
    print("\nratio = throughput of the product's run / a raw single DELETE of the same rows (goal >= 0.5);")
    print("longest lock = oldest transaction seen holding the table's row-exclusive lock (goal < 1 s)")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "retention.json").write_text(json.dumps({"rows": args.rows, "product": results, "raw": raw}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
