"""The connector contract: one class per channel, all taking a batch of resolved subjects.

A connector is built from a data-map ``System`` and reaches it through the system's
Airflow connection. Every action takes a batch (a single request is a batch of one) and
returns frames keyed by collection, each row carrying ``_request_id`` so a wave of requests
is split back per subject. An action a connector does not support raises
``UnsupportedActionError``: it never returns an empty result that would read as "no data".
Changes to this interface are additive only (docs/adr/0001-connector-contract.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from include.dsr.core.errors import TerminalError

if TYPE_CHECKING:
    import pandas as pd

    from include.dsr.core.data_map import Collection, System
    from include.dsr.identity.resolver import ResolvedSubject

REQUEST_ID_COLUMN = "_request_id"


class UnsupportedActionError(TerminalError):
    """The connector cannot perform this action on its system."""


@dataclass
class ExportResult:
    """Rows gathered from one system: collection -> frame (each row tagged with ``_request_id``)."""

    system: str
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)  # collection -> object keys copied
    # What the source said on its own, for the checks: its count of the subjects' rows per
    # collection (a separate count query, the partner's reported count) and the columns and
    # collections it returned before any padding to the data map.
    source_counts: dict[str, int] = field(default_factory=dict)
    returned_columns: dict[str, list[str]] = field(default_factory=dict)
    returned_collections: list[str] = field(default_factory=list)
    # Partners: per answer and table, the rows returned and the count the partner reported.
    answer_counts: list[dict] = field(default_factory=list)
    # Object stores: per collection, the object keys the subjects' database rows reference.
    referenced_keys: dict[str, list[str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {name: len(df) for name, df in self.frames.items()}


class BaseConnector(ABC):
    """Base of every connector.

    :param system: the data-map system this connector serves
    """

    # Override with the data-map channel this class serves.
    channel: ClassVar[str] = ""
    # Override with the actions implemented: locate, export, erase, restrict, notify.
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, system: System) -> None:
        self.system = system

    def _unsupported(self, action: str):
        raise UnsupportedActionError(
            f"{type(self).__name__} cannot {action} on system {self.system.key!r}; "
            f"it supports {sorted(self.capabilities)}"
        )

    @abstractmethod
    def test_connection(self) -> None:
        """Raise if the system cannot be reached with its connection (every channel can say)."""

    def locate(self, subjects: list[ResolvedSubject]) -> dict[str, int]:
        """Count the subjects' rows per collection without reading them."""
        self._unsupported("locate")

    def export(self, subjects: list[ResolvedSubject], collections: list[Collection] | None = None) -> ExportResult:
        """Read the subjects' rows (all personal collections unless ``collections`` is given)."""
        self._unsupported("export")

    def erase(self, subjects: list[ResolvedSubject]) -> dict[str, int]:
        self._unsupported("erase")

    def restrict(self, subjects: list[ResolvedSubject], lift: bool = False) -> dict[str, int]:
        self._unsupported("restrict")

    def notify(self, subjects: list[ResolvedSubject], event: str) -> None:
        self._unsupported("notify")

    def close(self) -> None:  # noqa: B027 - an optional hook: most connectors hold no client
        """Release clients; the default has nothing to release."""
