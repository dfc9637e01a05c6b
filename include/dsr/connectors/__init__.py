"""Connectors: one class per data-map channel, looked up explicitly, and the staging area results land in.

Each takes a batch of resolved subjects. Imports ``identity``, ``connections`` and
``core``; never ``rights``, ``package`` or ``orchestration`` (a connector does not know the right).
"""

from __future__ import annotations

from include.dsr.connectors.base import BaseConnector
from include.dsr.connectors.object_store import ObjectStoreConnector
from include.dsr.connectors.partner_api import PartnerApiConnector
from include.dsr.connectors.partner_dropbox import PartnerDropboxConnector
from include.dsr.connectors.partner_manual import ManualPartnerConnector
from include.dsr.connectors.sql_database import SqlDatabaseConnector
from include.dsr.core.errors import TerminalError

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
        raise TerminalError(
            f"no connector for channel {channel!r}: add it to CONNECTORS (known: {sorted(CONNECTORS)})"
        ) from None
