"""The Agent's ack ledger as a port: the commands it holds for its terminals, kept across a restart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class LedgerError(Exception):
    """The ledger could not be read or written."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    command_id: str
    account_id: str
    line: bytes
    """The command as the protocol line Core's message was encoded to (decoded again at load)."""
    affirmed_ms: int
    """When Core last sent the command."""
    attempts: int


class AckLedger(Protocol):
    def load(self) -> list[LedgerEntry]:
        """Every entry, oldest first (the order the terminal gets them in after a restart)."""
        ...

    def apply(self, puts: Sequence[LedgerEntry], deletes: Sequence[str]) -> None:
        """Insert or replace ``puts`` and delete the command_ids in ``deletes``, all in one transaction.
        A command_id in both is deleted. Raises LedgerError."""
        ...

    def close(self) -> None: ...
