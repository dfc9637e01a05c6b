"""Connector for partners without any DSR interface (channel ``manual``).

Nothing is automated: ops contact the partner (the data map's ``channel_config.contact``)
and record the partner's confirmation in a human-in-the-loop task. This class only
produces the instructions shown in that task; every data action is unsupported.
"""

from __future__ import annotations

from typing import ClassVar

from include.dsr.connectors.base import BaseConnector
from include.dsr.core.errors import TerminalError

CONFIRMED = "Partner confirmed"
NO_DATA = "Partner holds no data"
REFUSED = "Partner refused or did not answer"
OPTIONS = [CONFIRMED, NO_DATA, REFUSED]


class ManualPartnerConnector(BaseConnector):
    channel: ClassVar[str] = "manual"
    capabilities: ClassVar[frozenset[str]] = frozenset({"test_connection", "instructions"})

    def test_connection(self) -> None:
        """Nothing to reach: check that ops are told whom to contact."""
        if not self.system.channel_config.get("contact"):
            raise TerminalError(
                f"manual partner {self.system.key!r} has no channel_config.contact: "
                "add the partner's DPO address to the data map"
            )

    def instructions(self, request_type: str, request_id: str) -> str:
        """Markdown for the HITL task: whom to contact and what to record (no personal data)."""
        config = self.system.channel_config
        recipient = self.system.recipient
        return (
            f"**{recipient.legal_name}** ({recipient.country}) has no DSR interface.\n\n"
            f"1. {config.get('instructions', 'Contact the partner')} at `{config.get('contact', 'see contract')}`.\n"
            f"2. Ask for a **{request_type}** for the subject of request `{request_id}` "
            "(identities: see this run's conf).\n"
            "3. Upload what the partner sends to the request's staging area if it holds data, "
            "then record the outcome and the number of records here."
        )
