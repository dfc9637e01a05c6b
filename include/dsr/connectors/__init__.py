"""Connector registry: one class per data-map channel, looked up explicitly."""

from __future__ import annotations

from include.dsr.connectors.base import BaseConnector
from include.dsr.connectors.object_store import ObjectStoreConnector
from include.dsr.connectors.partner_api import PartnerApiConnector
from include.dsr.connectors.partner_dropbox import PartnerDropboxConnector
from include.dsr.connectors.partner_manual import ManualPartnerConnector
from include.dsr.connectors.sql_database import SqlDatabaseConnector
from include.dsr.errors import TerminalError

CONNECTORS: dict[str, type[BaseConnector]] = {
    "database": SqlDatabaseConnector,
    "object_store": ObjectStoreConnector,
    "api": PartnerApiConnector,
    "s3_dropbox": PartnerDropboxConnector,
    "manual": ManualPartnerConnector,
}


def connector_class(channel: str) -> type[BaseConnector]:
    try:
        return CONNECTORS[channel]
    except KeyError:
        raise TerminalError(f"no connector for channel {channel!r}: add it to CONNECTORS "
                            f"(known: {sorted(CONNECTORS)})") from None
