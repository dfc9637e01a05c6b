"""Connector for the object store (S3, or any S3-compatible server through ``endpoint_url``).

Object collections do not carry identities themselves: each names the platform-DB field
that holds its keys (``object_key_field: quotes.spec_object_key``). The connector asks the
database connector for the subject's rows of that collection, then copies each object
into the request's staging area, recording size and SHA-256 for the manifest.
"""

from __future__ import annotations

import hashlib
import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from include.dsr.connectors.base import REQUEST_ID_COLUMN, BaseConnector, ExportResult

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
    capabilities: ClassVar[frozenset[str]] = frozenset({"test_connection", "locate", "export"})

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
            records = []
            for key, request_id in rows[[key_field, REQUEST_ID_COLUMN]].itertuples(index=False):
                if key:
                    records.append({**self._stage(key, request_id), REQUEST_ID_COLUMN: request_id})
            result.frames[coll.name] = pd.DataFrame.from_records(records, columns=[*OBJECT_COLUMNS, REQUEST_ID_COLUMN])
            result.files[coll.name] = [r["staged_key"] for r in records]
            result.returned_collections.append(coll.name)
            result.referenced_keys[coll.name] = sorted({str(k) for k in rows[key_field] if k})
        log.info("staged %s objects from %s", sum(len(v) for v in result.files.values()), self.system.key)
        return result

    def _stage(self, key: str, request_id: str) -> dict:
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        staged_key = f"{self.staging_prefix.format(request_id=request_id)}{key}"
        self.s3.put_object(Bucket=self.staging_bucket, Key=staged_key, Body=body)
        return {
            "object_key": key,
            "size_bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "staged_key": staged_key,
        }
