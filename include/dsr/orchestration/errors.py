"""Map engine errors onto Airflow's retry semantics.

``TerminalError`` (bad input, failed check, refused partner call) fails the task at once:
retrying cannot help. Everything else, ``TransientError`` included, is left to retries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_step(call: Callable[[], T]) -> T:
    from airflow.sdk.exceptions import AirflowFailException

    from include.dsr.core.errors import TerminalError

    try:
        return call()
    except TerminalError as exc:
        raise AirflowFailException(str(exc)) from exc
