"""The resources a request needs, built once per process from Airflow connections.

Tests build a ``Runtime`` directly from engines and clients; tasks call ``from_airflow()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

from include import constants, settings
from include.dsr.connectors import connector_class

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from include.dsr.connectors.base import BaseConnector
    from include.dsr.connectors.staging import Staging
    from include.dsr.core.data_map import DataMap, System
    from include.dsr.ledger.api import Ledger
    from include.dsr.ledger.registry import Registry

# Which collections each right reads.
PORTABLE = ("provided", "observed")


def collections_in_scope(system: System, right: str) -> list:
    """Access reads every personal collection; portability only provided and observed data."""
    personal = [c for c in system.collections if c.personal]
    if right == "portability":
        return [c for c in personal if c.portability in PORTABLE]
    return personal


@dataclass
class Runtime:
    data_map: DataMap
    ledger: Ledger
    app_engine: Engine
    s3: Any
    exports_bucket: str = constants.EXPORTS_BUCKET
    # Keys of the keyed hashes and of the ledger's subject fingerprint (connections.secret()).
    hash_secret: str = settings.DEMO_ERASURE_HASH_SECRET
    fingerprint_secret: str = settings.DEMO_FINGERPRINT_SECRET
    # Per-system client overrides (tests: partner URLs, S3 clients).
    overrides: dict[str, dict] = field(default_factory=dict)
    # The connection ``s3`` was made from (None: a client given as it is, in tests).
    s3_conn_id: str | None = None

    @classmethod
    def from_airflow(cls) -> Runtime:
        return _airflow_runtime()

    def s3_maker(self) -> Callable[[], Any] | None:
        """Makes new S3 clients like ``s3`` without asking Airflow again (a forked process needs a
        client of its own); None for a client given as it is, or a connection that needs the
        provider hook's session."""
        if self.s3_conn_id is None:
            return None
        from include.dsr.connections import s3_client_args, s3_client_from

        args = s3_client_args(self.s3_conn_id)
        return partial(s3_client_from, args) if args is not None else None

    @property
    def registry(self) -> Registry:
        """Subject keys and held data, in the ledger's database."""
        from include.dsr.ledger.registry import Registry

        return Registry(self.ledger.engine)

    def staging(self, request_id: str) -> Staging:
        from include.dsr.connectors.staging import Staging

        return Staging(self.s3, self.exports_bucket, request_id)

    def connector(self, system_key: str, request_id: str | None = None) -> BaseConnector:
        """The connector for a system, wired to this runtime's engine / staging area."""
        from include.dsr.connectors.object_store import ObjectStoreConnector
        from include.dsr.connectors.sql_database import SqlDatabaseConnector

        system = self.data_map.system(system_key)
        extra = self.overrides.get(system_key, {})
        cls = connector_class(system.channel)
        if cls is SqlDatabaseConnector:
            return cls(system, engine=self.app_engine)
        if cls is ObjectStoreConnector:
            key_source = SqlDatabaseConnector(self.data_map.system("fabconnect_app"), engine=self.app_engine)
            staging = self.staging(request_id or "")
            return cls(system, key_source, self.exports_bucket, staging.files_prefix, s3=extra.get("s3", self.s3))
        return cls(system, **extra)


@lru_cache(maxsize=1)
def _airflow_runtime() -> Runtime:
    from include.dsr.connections import LazyClient, engine_for, s3_client, secret, sqlalchemy_url
    from include.dsr.core.data_map import load_data_map
    from include.dsr.ledger.api import Ledger

    # Secrets first: a task without real secrets must stop before it touches anything.
    hash_secret, fingerprint_secret = secret("erasure_hash"), secret("fingerprint")
    ledger = Ledger(sqlalchemy_url(constants.CONN_LEDGER))
    ledger.create_schema()
    return Runtime(
        data_map=load_data_map(),
        ledger=ledger,
        app_engine=engine_for(constants.CONN_APP_DB),
        s3=LazyClient(lambda: s3_client(constants.CONN_S3)),
        s3_conn_id=constants.CONN_S3,
        hash_secret=hash_secret,
        fingerprint_secret=fingerprint_secret,
    )
