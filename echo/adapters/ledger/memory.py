"""An ack ledger in memory: what tests and the simulation use (in the simulation it plays the Agent's
disk, outliving every Agent process)."""

from __future__ import annotations

from collections.abc import Sequence

from echo.ports.ledger import LedgerEntry, LedgerError


class MemoryLedger:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, LedgerEntry]] = {}
        self._seq = 0
        self._closed = False

    def load(self) -> list[LedgerEntry]:
        self._check()
        return [e for _, e in sorted(self._entries.values(), key=lambda p: p[0])]

    def apply(self, puts: Sequence[LedgerEntry], deletes: Sequence[str]) -> None:
        self._check()
        for e in puts:
            old = self._entries.get(e.command_id)
            if old is None:
                self._seq += 1
            self._entries[e.command_id] = (old[0] if old else self._seq, e)
        for command_id in deletes:
            self._entries.pop(command_id, None)

    def close(self) -> None:
        self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise LedgerError("the ledger is closed")
