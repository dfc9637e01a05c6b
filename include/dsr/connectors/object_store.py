"""Connector for the object store (S3, or any S3-compatible server through ``endpoint_url``).

Object collections do not carry identities themselves: each names the platform-DB field
that holds its keys (``object_key_field: quotes.spec_object_key``). The connector asks the
database connector for the subject's rows of that collection, then copies each object
into the request's staging area, recording size and SHA-256 for the manifest.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from include.dsr.connectors.base import REQUEST_ID_COLUMN, BaseConnector, ExportResult
from include.dsr.connectors.object_streams import copy_and_hash
from include.dsr.core.errors import TransientError

if TYPE_CHECKING:
    from include.dsr.connectors.sql_database import SqlDatabaseConnector
    from include.dsr.core.data_map import Collection, System
    from include.dsr.identity.resolver import ResolvedSubject

log = logging.getLogger(__name__)

OBJECT_COLUMNS = ["object_key", "size_bytes", "sha256", "staged_key"]


class ObjectStoreConnector(BaseConnector):
    """:param key_source: database connector that knows which keys belong to a subject
    :param staging_bucket: / :param staging_prefix: where copies go (``<prefix><object key>``)
    :param s3: boto3 client override (tests); by default from the system's connection
    """

    channel: ClassVar[str] = "object_store"
    capabilities: ClassVar[frozenset[str]] = frozenset({"test_connection", "locate", "export", "erase"})

    def __init__(
        self, system: System, key_source: SqlDatabaseConnector, staging_bucket: str, staging_prefix: str, s3: Any = None
    ) -> None:
        super().__init__(system)
        self.key_source = key_source
        self.staging_bucket, self.staging_prefix = staging_bucket, staging_prefix
        self._s3 = s3

    @cached_property
    def s3(self):
        from include.dsr.connections import s3_client

        return self._s3 or s3_client(self.system.connection_id)

    @property
    def bucket(self) -> str:
        return self.system.channel_config["bucket"]

    def test_connection(self) -> None:
        self.s3.head_bucket(Bucket=self.bucket)

    def _keys(self, subjects: list[ResolvedSubject], coll: Collection):
        """The subjects' rows of the collection naming this collection's objects, and the key field."""
        source_name, _, key_field = (coll.object_key_field or "").partition(".")
        source = self.key_source.system.collection(source_name)
        return self.key_source.export(subjects, [source]).frames[source_name], key_field

    def locate(self, subjects: list[ResolvedSubject]) -> dict[str, int]:
        """Objects per collection the subjects' rows reference (nothing is read from the store)."""
        counts = {}
        for coll in self.system.collections:
            rows, key_field = self._keys(subjects, coll)
            counts[coll.name] = len({str(k) for k in rows[key_field] if k})
        return counts

    def export(self, subjects: list[ResolvedSubject], collections: list[Collection] | None = None) -> ExportResult:
        import pandas as pd

        result = ExportResult(self.system.key)
        for coll in collections or self.system.collections:
            rows, key_field = self._keys(subjects, coll)
            wanted = [(key, rid) for key, rid in rows[[key_field, REQUEST_ID_COLUMN]].itertuples(index=False) if key]
            # Copies are made by the store; a wave's thousands of them overlap their round trips.
            with ThreadPoolExecutor(STAGE_THREADS) as pool:
                staged = list(pool.map(lambda pair: self._stage(*pair), wanted))
            records = [{**found, REQUEST_ID_COLUMN: rid} for found, (_, rid) in zip(staged, wanted, strict=True)]
            result.frames[coll.name] = pd.DataFrame.from_records(records, columns=[*OBJECT_COLUMNS, REQUEST_ID_COLUMN])
            result.files[coll.name] = [r["staged_key"] for r in records]
            result.returned_collections.append(coll.name)
            result.referenced_keys[coll.name] = sorted({str(k) for k in rows[key_field] if k})
        log.info("staged %s objects from %s", sum(len(v) for v in result.files.values()), self.system.key)
        return result

    def keys_by_request(self, subjects: list[ResolvedSubject]) -> dict[str, dict[str, list[str]]]:
        """Request id -> collection -> the object keys its subject's database rows reference (one
        export of the key rows for the whole batch)."""
        found: dict[str, dict[str, list[str]]] = {s.request_id: {} for s in subjects}
        for coll in self.system.collections:
            rows, key_field = self._keys(subjects, coll)
            per_request: dict[str, set[str]] = {}
            for key, request_id in rows[[key_field, REQUEST_ID_COLUMN]].itertuples(index=False):
                if key:
                    per_request.setdefault(request_id, set()).add(str(key))
            for request_id, keys in found.items():
                keys[coll.name] = sorted(per_request.get(request_id, ()))
        return found

    def erase_keys(self, keys: list[str]) -> dict[str, int]:
        """Delete every version of each key (and its delete markers); idempotent."""
        return delete_versions(self.s3, self.bucket, keys)

    def _stage(self, key: str, request_id: str) -> dict:
        """Copy the object into staging in the store and hash the copy as stored (see object_streams)."""
        staged_key = f"{self.staging_prefix.format(request_id=request_id)}{key}"
        sha256, size = copy_and_hash(self.s3, self.bucket, key, self.staging_bucket, staged_key)
        return {"object_key": key, "size_bytes": size, "sha256": sha256, "staged_key": staged_key}


#: Objects copied into staging at once (each copy is two round trips to the store).
STAGE_THREADS = 8
#: Above this many exact keys, one listing of the whole bucket is cheaper than a listing per key.
LIST_WHOLE_BUCKET_ABOVE = 200


def list_versions(s3: Any, bucket: str, keys: list[str] | None = None, prefix: str | None = None) -> list[dict]:
    """Every version and delete marker (``Key``, ``VersionId``) of ``keys`` (exact) or under ``prefix``.

    A bucket without versioning lists each object once (version ``null``).
    """
    wanted = set(keys or [])
    if prefix is not None:
        starts: list[str] = [prefix]
    elif len(wanted) > LIST_WHOLE_BUCKET_ABOVE:
        starts = [""]
    else:
        starts = sorted(wanted)
    found: dict[tuple[str, str], dict] = {}
    for start in starts:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=start):
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if prefix is not None or item["Key"] in wanted:
                    found[(item["Key"], item["VersionId"])] = {"Key": item["Key"], "VersionId": item["VersionId"]}
    return list(found.values())


def versions_left(s3: Any, bucket: str, keys: list[str] | None = None, prefix: str | None = None) -> dict[str, int]:
    """Key -> how many versions and delete markers are left of it."""
    left: dict[str, int] = {}
    for item in list_versions(s3, bucket, keys, prefix):
        left[item["Key"]] = left.get(item["Key"], 0) + 1
    return left


def delete_versions(s3: Any, bucket: str, keys: list[str] | None = None, prefix: str | None = None) -> dict[str, int]:
    """Delete every version and delete marker of ``keys`` (exact) or of everything under ``prefix``,
    in batches of 1,000; returns ``{"objects", "versions"}`` deleted. A key some version of which
    the store refused to delete raises (a batch delete answers 200 even then)."""
    batch = list_versions(s3, bucket, keys, prefix)
    for i in range(0, len(batch), 1000):
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch[i : i + 1000], "Quiet": True})
        if answer.get("Errors"):
            codes = sorted({e.get("Code", "?") for e in answer["Errors"]})
            raise TransientError(f"{len(answer['Errors'])} object versions in {bucket} were not deleted ({codes})")
    objects = len({item["Key"] for item in batch})
    log.info("deleted %s versions of %s objects from %s", len(batch), objects, bucket)
    return {"objects": objects, "versions": len(batch)}
