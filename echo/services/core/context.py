"""The explicit context every engine handler takes: Core's state, its rules, its clock and id source, its
counters, and how a command's retry time reaches the shell's timers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from echo.delivery import machine as delivery
from echo.domain.config import CoreConfig
from echo.domain.policy import Policies
from echo.domain.registration import ProtocolPolicy, SymbolCatalog
from echo.ports.clock import Clock
from echo.services.core.state import State
from echo.services.core.tx import Level, Tx
from echo.services.ids import IdFactory


@dataclass
class Context:
    clock: Clock
    ids: IdFactory
    config: CoreConfig
    policies: Policies
    protocol: ProtocolPolicy
    catalog: SymbolCatalog
    delivery: delivery.Settings
    schedule: Callable[[int, str], None]
    """Wake the reconciler for a command_id at a time (ms)."""
    state: State = field(default_factory=State)
    stats: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def now(self) -> int:
        return self.clock.now_ms()

    def record(self, tx: Tx, kind: str, /, *, level: Level | None = "info", **fields: Any) -> None:
        """``Tx.record`` with a fresh event id and the time now."""
        tx.record(self.ids.uuid7(), self.clock.now_ms(), kind, level=level, **fields)
