"""The handshake: the first message on every EA connection, and the protocol version this build speaks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from echo.domain.ids import parse_account_id
from echo.domain.messages._checks import check_numbers
from echo.domain.types import Role, SymbolSpec

PROTOCOL_VERSION = 2
"""The EA protocol version this build speaks (handshake v2 of RFC-005a)."""


_TERMINAL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass(frozen=True, slots=True)
class Capabilities:
    features: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Handshake:
    """First message on every EA connection (and after every reconnect)."""

    account_id: str
    role: Role
    protocol_version: int = 1
    client_semver: str = ""
    client_id: str = ""
    broker: str = ""
    terminal_build: int | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    symbols: list[SymbolSpec] = field(default_factory=list)
    symbol_mappings: dict[str, str] = field(default_factory=dict)
    """Master only: broker symbol -> canonical symbol (the EA input ``SymbolMappings``)."""
    terminal_id: str = ""
    """Random, generated once by the EA and kept in the terminal's files folder: proves a new connection
    comes from the terminal that holds the account's live one."""
    token: str = ""
    """The Agent's ``agent.token``, when it has one (the EA input ``AgentToken``)."""

    def __post_init__(self) -> None:
        check_numbers(self)
        parse_account_id(self.account_id)
        if self.terminal_id and not _TERMINAL_ID_RE.match(self.terminal_id):
            raise ValueError(
                f"terminal_id must be 16-64 characters of [A-Za-z0-9_-], got {self.terminal_id!r}"
            )
        if len(self.token) > 256:
            raise ValueError("token must be at most 256 characters")
        if self.protocol_version < 1:
            raise ValueError(f"protocol_version must be >= 1, got {self.protocol_version}")
        seen: set[str] = set()
        for s in self.symbols:
            if s.broker_symbol in seen:
                raise ValueError(f"symbol {s.broker_symbol!r} reported twice")
            seen.add(s.broker_symbol)
