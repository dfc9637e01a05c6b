"""The product's own copies of personal data in the exports bucket, removed once they have served.

* a package whose presigned link has lapsed (``<request_id>/`` and its ``_keys/`` password):
  the subject can no longer fetch it, and it copies their data;
* staging left behind (``_staging/<id>/``) by a request closed ``after_days`` ago, or by a batch
  the ledger does not know (a wave) last written that long ago;
* dry-run reports (``_dry_runs/``) older than ``after_days``.

Every version is deleted (the bucket may be versioned), in batches of 1,000. The ledger keeps
the facts (request rows, events); they hold no payloads.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.dsr.connectors.object_store import delete_versions

if TYPE_CHECKING:
    from include.dsr.ledger.api import Ledger


def _prefixes(s3: Any, bucket: str, prefix: str) -> dict[str, datetime]:
    """First-level ``<prefix><id>/`` folders and the newest write in each (aware UTC)."""
    newest: dict[str, datetime] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name = item["Key"][len(prefix) :].split("/", 1)[0]
            if name and "/" in item["Key"][len(prefix) :]:
                when = item["LastModified"].astimezone(UTC)
                newest[name] = max(newest.get(name, when), when)
    return newest


def own_copies(s3: Any, bucket: str, ledger: Ledger, now: datetime, after_days: float) -> dict[str, list[str]]:
    """What would go: ``{"packages": [request ids], "staging": [...], "dry_runs": [...]}``."""
    cutoff = now - timedelta(days=after_days)
    rows = {r.request_id: r for r in ledger.list_requests()}
    packages = sorted(
        rid
        for rid, r in rows.items()
        if r.package_url_expires_at is not None and r.package_url_expires_at < now and _has(s3, bucket, f"{rid}/")
    )
    staging = []
    for name, written in _prefixes(s3, bucket, "_staging/").items():
        row = rows.get(name)
        if row is None and written < cutoff or row is not None and row.closed_at is not None and row.closed_at < cutoff:
            staging.append(name)
    dry_runs = [name for name, written in _prefixes(s3, bucket, "_dry_runs/").items() if written < cutoff]
    return {"packages": packages, "staging": sorted(staging), "dry_runs": sorted(dry_runs)}


def purge_own_copies(s3: Any, bucket: str, ledger: Ledger, now: datetime, after_days: float) -> dict[str, int]:
    """Delete what :func:`own_copies` lists; returns counts of folders and object versions."""
    found = own_copies(s3, bucket, ledger, now, after_days)
    versions = 0
    for rid in found["packages"]:
        versions += delete_versions(s3, bucket, prefix=f"{rid}/")["versions"]
        versions += delete_versions(s3, bucket, prefix=f"_keys/{rid}.txt")["versions"]
    for name in found["staging"]:
        versions += delete_versions(s3, bucket, prefix=f"_staging/{name}/")["versions"]
    for name in found["dry_runs"]:
        versions += delete_versions(s3, bucket, prefix=f"_dry_runs/{name}/")["versions"]
    return {**{k: len(v) for k, v in found.items()}, "versions": versions}


def _has(s3: Any, bucket: str, prefix: str) -> bool:
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"))
